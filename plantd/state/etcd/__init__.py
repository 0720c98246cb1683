"""The etcd backend of the state store (``PLANTD_STATE_BACKEND=etcd``): the store
(plantd.state.etcd.store), its keyspace (layout), connection (conn) and the state bus
publisher role shared by several daemons (publisher). Imports grpc: loaded only when the
backend is etcd."""
