"""The request pipeline, sans-I/O: every endpoint's checks, in order, written once.

A request flows as plain values: an `Incoming` in, a `Reply` (or a `RequestError`) out, and its
audit records written on the way through a `Recorder`. The I/O a request needs - its body, the
upstream - sits behind the `Exchange` protocol that the web layer implements, so the order of
checks runs, and is tested, without HTTP (gidgethub's `sansio` is the model). No aiohttp here.

- `request`: the values (`Incoming`, `Reply`, `Exchange`, `Context`, `Flow`) and the shared
  steps (`begin`, `authenticate`, `admit`, the exfiltration guard);
- `proxy`: the guarded proxy and `whoami`;
- `calls`: the capability API (list, call, explain).
"""
