derpd_micro_bench(protocol SOURCES bench_protocol.cc LIBS derpd_protocol)
