"""The endpoint (`deepar-cli serve`): `server` (the routes, limits and refusals, no I/O),
`negotiation` (content types), `http_front` (HTTP/1.1 on one asyncio loop), `worker_pool`
and `worker` (the forecasting processes) and `serving` (the command's entry). It answers
through `inference.protocol`. May import `inference`, `model`, `threads` and `errors`;
nothing imports `serve` but `cli`.
"""
