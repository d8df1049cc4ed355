# Relay logic: packets/s through one shard, across two shards (one thread and two), the bare SPSC ring.
derpd_micro_bench(server SOURCES bench_server.cc LIBS derpd_server Threads::Threads)
