"""The OpenAPI 3.0 description the API serves at /openapi.json (and the fuzz tests are generated from).

Derived, not restated: its paths and methods are the route table's, path parameters are read from the
path templates, allowed values and limits are the constants the handlers validate with. `assembly` puts
it together from `operations` (the log routes), `console_operations` (the console's), `schemas` and the
building blocks in `parts`.
"""

from pipeline.api.openapi.assembly import document

__all__ = ["document"]
