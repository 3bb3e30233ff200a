package ipc

// WithNetpoll is withNetpoll for the package's external tests and
// benchmarks (process_test.go, bench_test.go).
func WithNetpoll() Option { return withNetpoll() }

// NetpollFlag reports whether -ipc.netpoll is set.
func NetpollFlag() bool { return *netpollFlag }
