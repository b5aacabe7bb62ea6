// jemalloc's options for lienthongd, read by jemalloc when it starts
// (MALLOC_CONF in the environment still overrides them).
//
// Memory freed goes back to the system after a second instead of jemalloc's
// default ten. Attachment transfers free a buffer of about a chunk per
// chunk inside gRPC, on many threads (so many arenas): with ten seconds of
// dirty pages kept, the broker's resident memory grew with its throughput
// (at 180 MiB/s of uploads and downloads, 20-35 MiB more than at 130)
// instead of with the work in flight.
extern "C" {
// NOLINTNEXTLINE: the name and type are jemalloc's.
const char* malloc_conf = "dirty_decay_ms:1000";
}
