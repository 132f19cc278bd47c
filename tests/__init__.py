"""The test suite. Runs in one process that also hosts services' gRPC servers and channels."""

import os

# gRPC's fork handlers run in every child this process forks (initdb, pg_ctl, nats-server,
# the e2e tests' services) and, while in-process gRPC servers and channels are busy, now
# and then crash the child before it execs: initdb "died with SIGSEGV" took 26 tests with
# it once (grpc/grpc#13998). Every fork here is followed by exec, which needs no fork
# support. Set before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
