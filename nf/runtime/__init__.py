"""The runtime process (`twamp-nf run`): YANG configuration in through the control socket, running TWAMP and
IKE objects, state and notifications out (docs/control-socket.md, docs/architecture.md)."""
