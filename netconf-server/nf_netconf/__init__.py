"""The twamp-nf NETCONF server process: SSH transport, datastores, validation, NACM and notifications.

It configures the runtime (``twamp-nf run``) through the control socket (docs/control-socket.md) and imports
nothing from the runtime's packages: the YANG modules in ``yang/`` are the whole contract.
"""
