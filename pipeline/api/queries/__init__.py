"""The API's SQL, one module per resource: the handlers call these after authorization, and no SQL text
stands anywhere else in `pipeline.api` (save /healthz's ``SELECT 1`` in `app`, and `trust.install`, which
the schema's owner runs, not the API).

Every value travels as a parameter; SQL text only varies by which filters are present. Reads of the
events table are keyset-paginated on (occurred_at, event_id) and bounded by a time range, so each is an
index range scan over a few day partitions (`events_room_time`; `events_target_time` and
`events_moderator_time` for a user's moderation history).

- `events`: a room's events (pages, one event, an event's context), and the shared query builder;
- `export`, `tail`, `moderation`: the events table as those routes read it;
- `days`, `insights`: a room's UTC days (totals, counts per type, summaries), cached per process;
- `rooms`: rooms and their owners and moderators (access decisions, "my rooms");
- `access_log`, `retention`, `deletion`, `sessions`: the SECURITY DEFINER functions and the tables of
  those routes; `audit`: the access audit's one INSERT; `role`: the start-up check of the API's role.
"""
