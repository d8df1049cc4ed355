# STUN codec and responder: parse, respond (tailnode / RFC 8489 / CHANGE-REQUEST / classic), build.
derpd_micro_bench(stun SOURCES stun_bench.cc LIBS derpd_stun)
