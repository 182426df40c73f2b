"""The route handlers, one module per resource; `pipeline.api.route_table` names each one's route.

Each handler: parameters (400 on anything odd) -> authorization (403) -> query (`pipeline.api.queries`)
-> audit -> answer. A refusal is raised; the gate answers it and audits it.
"""
