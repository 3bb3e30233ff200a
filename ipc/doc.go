// Package ipc is the wire between sandkit's privileged broker and its
// sandboxed renderers: typed request/reply calls over an AF_UNIX
// SOCK_SEQPACKET socket that pass file descriptors, never paths.
//
// Everything here assumes the peer is hostile. The renderer parses
// untrusted content and may be compromised; the broker must survive
// anything it sends. Hence:
//
//   - One datagram is one message (a wirepb.Envelope), so there is no
//     stream framing to get wrong, and the kernel tells us about
//     truncation (MSG_TRUNC, MSG_CTRUNC). The receive buffers hold
//     Limits.MaxDatagram+1 bytes and Limits.MaxFDs+1 descriptors so that
//     "one too many" is always detected.
//   - Every method has a MethodSpec: payload limits and the exact number
//     and kind of fds in each direction. Received fds are checked with
//     fstat/fcntl before anyone sees them.
//   - Anything unexpected is a *ProtocolError with a Reason and is fatal:
//     the Conn closes every fd that came with the offending datagram, fails
//     pending calls, closes the socket and reports the violation from Err,
//     so that the broker can kill the renderer. Input never panics.
//   - Received fds are closed on every error path; the tests count
//     /proc/self/fd.
//
// # Calls
//
// Declare a Method once (NewMethod) in a package both ends import; serve it
// with Handle on a Mux given to NewConn (WithMux); call it with Call. Both
// ends of a Conn can call and serve at once. Calls are multiplexed by
// request id (each side numbers its own requests); each handler runs in its
// own goroutine, at most Limits.MaxInFlight at a time per Conn. The caller's
// context deadline travels with the request as a relative timeout and
// becomes the handler's deadline; cancelling the caller's context sends a
// Cancel that cancels the handler's context.
//
// Every request gets exactly one reply, even when cancelled: a cancelled
// call keeps its request id (and its MaxInFlight slot) reserved until the
// peer's reply arrives, which is then dropped and its fds closed. This is
// what lets the receiver treat a reply to an unknown id as a violation, and
// it guarantees that the caller never has more requests outstanding than the
// peer allows.
//
// # Descriptor ownership
//
// The caller keeps the fds it passes to Call (the kernel duplicates them);
// it owns the fds Call returns. A handler owns the fds of its request,
// whatever it returns; the fds a handler returns are closed by ipc once the
// reply is sent (or cannot be). Fds of a reply nobody waits for any more,
// and of any message that violates the protocol, are closed by ipc.
//
// # Threads and syscalls
//
// The socket is non-blocking and driven by Go's netpoller, so an idle Conn
// pins no OS thread. The send and receive paths use only sendmsg, recvmsg,
// close, fstat and fcntl (F_GETFL, F_GET_SEALS, F_DUPFD_CLOEXEC) and the
// runtime's epoll calls, which a seccomp-confined renderer allows. Only the
// SeccompListener check reads /proc (the broker receives that kind).
//
// Bulk data goes through shared memory: see package shm and docs/ipc.md.
package ipc
