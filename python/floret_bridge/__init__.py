"""Floret's bridge to Flower's Python apps.

`flwr run` on a Flower app (components `pkg.module:attr`, no Cargo.toml) starts this
package in the user's Python, the one that has `flwr` and the app's dependencies:

- `python -m floret_bridge clientapp APP_DIR COMPONENT`: a long-lived worker that loads
  the user's `ClientApp` once and answers one (Message, Context) after another;
- `python -m floret_bridge serverapp APP_DIR COMPONENT`: the user's `ServerApp`, whose
  `Grid` is Floret's (every Grid call is a request to the `flwr` process).

Both speak framed protobuf over their stdin/stdout (see `frames`), reusing Flower's own
serde for messages and contexts, so whatever Flower can put in a message crosses as it
is. The package is pure Python and needs only `flwr` (and the numpy and protobuf it
brings). It never imports anything of Floret's: the Rust side carries it inside `flwr`
and writes it where this Python can import it.
"""

PROTOCOL = 1
