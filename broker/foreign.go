package broker

/*
#include <stdlib.h>
#include "foreign_launch.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/lockdownplan"
	"github.com/sandkit/sandkit/policy"
)

// Program is a foreign program: an executable that knows nothing of
// sandkit (a C converter, an OCR engine, /bin/cat), run by the broker
// under its policy (RunProgram).
//
// It gets the same namespaces and empty root as a Go renderer, plus the
// mounts the policy names (Filesystem.ReadOnlyPaths, ExecutablePaths,
// Tmpfs), rlimits, no capabilities, no_new_privs, Landlock and the
// seccomp allowlist (policy.ForeignSyscallRules) with the violation
// monitor. The broker's launcher applies all of it in the child before
// exec, when no untrusted byte has been read (see SECURITY.md, "Foreign
// programs").
//
// Its input and output are descriptors the broker installs: no host path
// reaches it, except that of the program itself, bound at its own path.
type Program struct {
	// Path is the absolute path of the executable: an ELF binary (a
	// script's interpreter could not open it, which is exec'd through
	// a close-on-exec descriptor). It is bound read-only and executable
	// at the same path in the empty root unless it lies beneath one of
	// the policy's ExecutablePaths. Its dynamic loader and libraries
	// must be in ExecutablePaths.
	Path string
	// Args is the program's argv, Args[0] included. Empty means
	// {Path}.
	Args []string
	// Env is the program's whole environment; nil is empty.
	Env []string
	// Input is the document: any readable descriptor of the caller's (a
	// sealed memfd, a pipe, a file the caller opened), installed at
	// InputFD. The broker duplicates it; the caller keeps and closes
	// its own. Nil leaves InputFD closed.
	Input   *os.File
	InputFD int
	// InputPath, if set, gives the program its Input as a file instead
	// of a descriptor, for programs that open their document by name:
	// the launcher copies Input's bytes (from offset 0; Input must be a
	// regular file or a memfd) into a new read-only file at InputPath,
	// which must lie inside one of the policy's Tmpfs mounts and counts
	// against its size. No host path is passed: the file is the
	// program's own copy. InputFD is then unused.
	InputPath string
	// Files are more files the program opens by name (a configuration,
	// a profile), copied the same way, parent directories made.
	Files []File
	// Output is where the program writes its result.
	Output Output
}

// File is a file a foreign program finds at Path, inside one of the
// policy's Tmpfs mounts: the launcher copies Content's bytes (a regular
// file or a memfd, from offset 0) there before exec.
type File struct {
	Path    string
	Content *os.File
}

// OutputKind says how a foreign program's result comes back.
type OutputKind int

const (
	// OutputPipe is a pipe the broker reads as the program writes, up
	// to Output.Limit bytes; a program that writes more is killed
	// (ExitBrokerLimit). For results the caller wants as bytes.
	OutputPipe OutputKind = iota
	// OutputMemfd is a memfd of Output.Limit bytes the broker makes,
	// its size sealed, counted against Limits.SharedMemory like the
	// shared memory a Go renderer gets (renderer.Session.Alloc). The
	// program writes it like a file, from offset 0; RLIMIT_FSIZE is
	// raised to at least its size. For large results the caller maps.
	OutputMemfd
	// OutputFile is a file the program creates by name at Output.Path,
	// inside one of the policy's Tmpfs mounts, for programs that write
	// their result into a directory. The launcher hands the broker that
	// mount's directory before the program runs; once the program and
	// every process of its namespace are gone, the broker opens exactly
	// Output.Path beneath it (no symlink, no other mount, a regular file
	// of at most Output.Limit bytes) and returns its bytes as
	// Result.Output. The program's stdout goes to its log, like stderr.
	OutputFile
	// OutputDescriptor is a descriptor of the caller's own,
	// Output.File, installed as it is: the program shares its open file
	// description, as a program a shell starts shares the shell's
	// terminal or redirected file. The broker reads and bounds nothing
	// (Limit is not used; Limits.FileSize bounds a regular file). For a
	// command line whose output is the caller's business, such as
	// sandkit run's stdout; a caller that wants the result as data uses
	// the others.
	OutputDescriptor
)

// Output is the descriptor a foreign program writes its result to.
type Output struct {
	Kind OutputKind
	// FD is its number in the program; 0 means 1 (stdout).
	FD int
	// Limit bounds the result in bytes; it must be set but for
	// OutputDescriptor.
	Limit uint64
	// File is the descriptor of an OutputDescriptor. The broker duplicates
	// it; the caller keeps and closes its own.
	File *os.File
	// Path is an OutputFile's absolute path in the program's root.
	Path string
}

// Result is how a foreign program ended and what it wrote.
type Result struct {
	PID    int
	Layers policy.Status
	// Exit says why it ended: ExitClean for status 0, ExitCrash with
	// the status otherwise, ExitViolation with the syscall, a limit.
	Exit *ExitError
	// ExitCode is its exit status, -1 if a signal ended it.
	ExitCode int
	// Signal is the signal that ended it, 0 if it exited.
	Signal syscall.Signal
	// Output is what it wrote to an OutputPipe or OutputFile.
	Output []byte
	// File is an OutputMemfd, sealed against any change once the
	// program is gone (the caller closes it), and Written the
	// program's offset in it when it ended: how far it says it wrote.
	// Both are the program's, untrusted like any renderer's result.
	File    *os.File
	Written int64
}

// ErrProgram is wrapped by the errors RunProgram returns for a Program
// or policy it cannot run.
var ErrProgram = errors.New("broker: cannot run the program")

// ErrOutputFile is wrapped by the error RunProgram returns, with the
// Result, when a program ended without a readable OutputFile: none, not
// a regular file, a symlink, or larger than Output.Limit.
var ErrOutputFile = errors.New("broker: no valid output file")

// RunProgram runs prog under the broker's policy, for origin and
// document, and waits until it has ended. While it runs it is one of the
// broker's live renderers: it counts against MaxRenderers, Renderers()
// lists it bound to origin and document, and it has the same events
// (EventReady with the layers in force, EventBound, EventExited) and exit
// classification as a Go renderer. ctx ending kills it (ExitReleased).
//
// The error is non-nil when the program could not be started (a
// *policy.UnavailableError names a layer the launcher could not apply);
// how a started program ended is Result.Exit. For an OutputFile, the
// error wraps ErrOutputFile, with the Result, when the file cannot be
// read back.
func (b *Broker) RunProgram(ctx context.Context, origin, document string, prog Program) (*Result, error) {
	l, err := b.prepareLaunch(prog)
	if err != nil {
		return nil, err
	}
	defer l.free()
	if err := b.takeSlot(ctx); err != nil {
		return nil, err
	}
	r, err := b.launch(l, key{origin, document})
	if err != nil {
		return nil, err
	}
	if lt := b.policy.Limits.Lifetime; lt > 0 {
		t := time.AfterFunc(lt, func() { r.kill(ExitTimeout, fmt.Sprintf("lifetime limit %v", lt)) })
		defer t.Stop()
	}
	select {
	case <-r.exited:
	case <-ctx.Done():
		r.kill(ExitReleased, "cancelled: "+ctx.Err().Error())
		<-r.exited
	}
	res := &Result{PID: r.pid, Layers: r.Layers(), Exit: r.exitErr, ExitCode: -1}
	if r.state != nil {
		res.ExitCode = r.state.ExitCode()
		if ws, ok := r.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = ws.Signal()
		}
	}
	if l.outPipe != nil {
		o := <-l.outPipe
		if o.err != nil {
			b.log.Debug("foreign program output", "pid", r.pid, "err", o.err)
		}
		res.Output = o.data
	}
	if l.memfd != nil {
		res.Written, err = l.memfd.Seek(0, io.SeekCurrent)
		if err == nil {
			_, err = unix.FcntlInt(l.memfd.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_SEAL)
		}
		if err != nil {
			return res, fmt.Errorf("broker: output memfd: %w", err)
		}
		res.Written = min(res.Written, int64(prog.Output.Limit))
		res.File, l.memfd = l.memfd, nil
	}
	if l.outDir != nil {
		res.Output, err = readOutputFile(l.outDir, l.outRel, prog.Output.Limit)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// readOutputFile reads the program's output file rel beneath dir, the
// directory of its tmpfs, once the program and its namespace are gone
// (nothing can change the file any more). The program named and made
// everything beneath dir: the path may cross no symlink, magic link or
// mount, the file must be regular (O_NONBLOCK: a FIFO cannot block the
// open) and at most limit bytes.
func readOutputFile(dir *os.File, rel string, limit uint64) ([]byte, error) {
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrOutputFile, rel, err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrOutputFile, rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: %s is not a regular file (mode %#o)", ErrOutputFile, rel, st.Mode)
	}
	if uint64(st.Size) > limit {
		return nil, fmt.Errorf("%w: %s has %d bytes, over %d", ErrOutputFile, rel, st.Size, limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err == nil && uint64(len(data)) > limit {
		err = fmt.Errorf("%d bytes", len(data))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrOutputFile, rel, err)
	}
	return data, nil
}

// tmpfsIndex returns the index in tmpfs of the mount strictly containing
// path, which must be absolute and clean, and path relative to it.
func tmpfsIndex(tmpfs []policy.Tmpfs, path string) (int, string, bool) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return 0, "", false
	}
	for i, t := range tmpfs {
		if beneathDir(path, t.Path) && path != t.Path {
			return i, strings.TrimPrefix(path[len(t.Path):], "/"), true
		}
	}
	return 0, "", false
}

// takeSlot counts a spawn against MaxRenderers, waiting for a slot.
func (b *Broker) takeSlot(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return ErrClosed
		}
		if len(b.live)+b.spawning < b.cfg.MaxRenderers {
			b.spawning++
			b.mu.Unlock()
			return nil
		}
		wait := b.slotFreed
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// launchSteps names the launcher's steps (SANDKIT_LAUNCH_*), by value,
// with the layer each applies.
var launchSteps = [...]struct {
	name  string
	layer policy.Layer
}{
	{"", ""},
	{"build the empty root", policy.LayerMountNS},
	{"mount", policy.LayerMountNS},
	{"set the hostname", policy.LayerUTSNS},
	{"install descriptors", ""},
	{"open the program in the empty root", ""},
	{"set rlimits", policy.LayerRlimits},
	{"drop capabilities", policy.LayerCapabilities},
	{"set no_new_privs", policy.LayerNoNewPrivs},
	{"apply Landlock", policy.LayerLandlockFS},
	{"add a Landlock rule", policy.LayerLandlockFS},
	{"install the seccomp filter", policy.LayerSeccomp},
	{"hand the seccomp listener to the broker", policy.LayerSeccompMonitor},
	{"exec the program", ""},
	{"hand the output tmpfs to the broker", ""},
	{"copy the input files into the tmpfs", ""},
}

// launchError explains a launcher that failed, wrapping a
// *policy.UnavailableError for a step that applies a layer.
func launchError(l *C.struct_sandkit_launch, errno error) error {
	step := int(l.step)
	if step <= 0 || step >= len(launchSteps) {
		return fmt.Errorf("foreign program launcher: unknown step %d: %w", step, errno)
	}
	s := launchSteps[step]
	what := s.name
	if i := int(l.index); i >= 0 && i < int(l.nmounts) {
		m := unsafe.Slice(l.mounts, l.nmounts)[i]
		what += " " + C.GoString(m.path)
	}
	var err error = fmt.Errorf("%s: %w", what, errno)
	if s.layer != "" {
		err = &policy.UnavailableError{Layer: s.layer, Err: err}
	}
	// A step of its own, not the namespaces' creation (see spawnErr).
	return &childStepError{step: "foreign program launcher", err: err}
}

// launcherRules are the seccomp rules the launcher itself needs once its
// filter is in force, beyond the program's allowlist (which has sendmsg,
// close and exit_group): the exec of the program through descriptor
// exeNum, with AT_EMPTY_PATH. exeNum is at or above the program's
// RLIMIT_NOFILE and close-on-exec, so once exec'd the program can never
// hold a descriptor of that number again (open and dup pick numbers below
// the limit; dup2 and dup3 to it fail with EBADF): execveat, allowed for
// that one exec, is refused to it ever after.
func launcherRules(exeNum int) []policy.SyscallRule {
	return []policy.SyscallRule{{
		Name:  "execveat",
		AnyOf: [][]policy.ArgCond{{{Arg: 0, Op: policy.Equal, Value: uint64(exeNum)}, {Arg: 4, Op: policy.Equal, Value: unix.AT_EMPTY_PATH}}},
		Why:   "the launcher's exec of the program, through a descriptor number the program can never hold",
	}}
}

// launch is one prepared launch: the C spec and what it points to.
type launchSpec struct {
	c       *C.struct_sandkit_launch
	cmem    []unsafe.Pointer
	files   []*os.File // the broker's descriptors the spec names
	layers  policy.Status
	notify  bool
	sock    *os.File // the broker's end of the listener socket
	outW    *os.File // the output's write end (pipe) or the memfd
	outR    *os.File // the output pipe's read end
	memfd   *os.File
	charge  uint64
	outPipe chan pipeOutput
	argv    []string
	limit   uint64
	// An OutputFile: the directory of its tmpfs, received from the
	// launcher, and its path beneath.
	fileOut bool
	outDir  *os.File
	outRel  string
}

type pipeOutput struct {
	data []byte
	err  error
}

func (l *launchSpec) alloc(n uintptr) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("broker: out of memory") // as Go's own allocator would
	}
	l.cmem = append(l.cmem, p)
	return p
}

func (l *launchSpec) cstring(s string) *C.char {
	p := C.CString(s)
	l.cmem = append(l.cmem, unsafe.Pointer(p))
	return p
}

func (l *launchSpec) cstrings(ss []string) **C.char {
	arr := unsafe.Slice((**C.char)(l.alloc(uintptr(len(ss)+1)*unsafe.Sizeof(uintptr(0)))), len(ss)+1)
	for i, s := range ss {
		arr[i] = l.cstring(s)
	}
	return &arr[0]
}

// free releases the C memory and every descriptor the broker holds for
// the launch, but the memfd a Result handed on.
func (l *launchSpec) free() {
	for _, p := range l.cmem {
		C.free(p)
	}
	l.cmem = nil
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
	for _, f := range []*os.File{l.sock, l.outW, l.memfd, l.outDir} {
		if f != nil {
			f.Close()
		}
	}
	l.sock, l.outW, l.memfd, l.outDir = nil, nil, nil, nil
}

// prepareLaunch checks prog against the broker's policy and prepares
// everything the launcher needs: it opens the mounts' sources and the
// output, compiles the filter, and lays the spec out in C memory.
func (b *Broker) prepareLaunch(prog Program) (_ *launchSpec, err error) {
	p := b.policy
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrProgram}, args...)...)
	}
	switch {
	case b.cfg.CgroupDir != "":
		return nil, bad("foreign programs do not run in a cgroup yet (Config.CgroupDir)")
	case b.ids != nil && b.ids.execReason != nil:
		return nil, bad("foreign programs need the broker's vfork spawn, which this host's ids cannot use: %v", b.ids.execReason)
	case !filepath.IsAbs(prog.Path) || filepath.Clean(prog.Path) != prog.Path:
		return nil, bad("program path %q is not absolute and clean", prog.Path)
	case prog.Output.Limit == 0 && prog.Output.Kind != OutputDescriptor:
		return nil, bad("Output.Limit is not set")
	case p.Limits.OpenFiles == 0:
		// The launcher's exec is allowed through a descriptor number
		// the program must never reach again: at RLIMIT_NOFILE.
		return nil, bad("foreign programs need Limits.OpenFiles")
	}
	outFD := prog.Output.FD
	if outFD == 0 {
		outFD = 1
	}
	if prog.InputFD < 0 || outFD < 0 || prog.InputFD == outFD || prog.InputFD == 2 || outFD == 2 ||
		uint64(max(prog.InputFD, outFD)) >= p.Limits.OpenFiles-1 {
		return nil, bad("input fd %d and output fd %d: want two distinct numbers other than 2 (stderr), below Limits.OpenFiles-1", prog.InputFD, outFD)
	}
	exeNum := int(p.Limits.OpenFiles)
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil || nofile.Cur <= uint64(exeNum)+8 {
		return nil, bad("Limits.OpenFiles %d is not below the broker's own RLIMIT_NOFILE", exeNum)
	}
	plan, err := lockdownplan.PlanForeign(p, launcherRules(exeNum))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	l := &launchSpec{layers: plan.Layers, notify: plan.Notify, limit: prog.Output.Limit}
	defer func() {
		if err != nil {
			l.free()
		}
	}()
	c := (*C.struct_sandkit_launch)(l.alloc(unsafe.Sizeof(C.struct_sandkit_launch{})))
	l.c = c

	// Mounts, in the order the launcher makes them: binds, then tmpfs.
	type mount struct {
		path string
		kind C.int
		size uint64
		rdev uint64
	}
	var mounts []mount
	for _, path := range p.Filesystem.ReadOnlyPaths {
		mounts = append(mounts, mount{path: path, kind: C.SANDKIT_MOUNT_READ_ONLY})
	}
	for _, path := range p.Filesystem.ExecutablePaths {
		mounts = append(mounts, mount{path: path, kind: C.SANDKIT_MOUNT_EXECUTABLE})
	}
	if !slices.ContainsFunc(p.Filesystem.ExecutablePaths, func(dir string) bool { return beneathDir(prog.Path, dir) }) {
		mounts = append(mounts, mount{path: prog.Path, kind: C.SANDKIT_MOUNT_EXECUTABLE})
	}
	for _, dev := range p.Filesystem.Devices {
		rdev, ok := policy.ForeignDevice(dev)
		if !ok { // Validate refused it already
			return nil, bad("device %q is not one a policy may bind", dev)
		}
		mounts = append(mounts, mount{path: dev, kind: C.SANDKIT_MOUNT_DEVICE, rdev: rdev})
	}
	firstTmpfs := len(mounts)
	for _, t := range p.Filesystem.Tmpfs {
		mounts = append(mounts, mount{path: t.Path, kind: C.SANDKIT_MOUNT_TMPFS, size: t.Size})
	}
	if !p.Namespaces.Mount {
		return nil, bad("foreign programs need the mount namespace: the program is bound into the empty root")
	}
	cm := unsafe.Slice((*C.struct_sandkit_mount)(l.alloc(uintptr(len(mounts))*unsafe.Sizeof(C.struct_sandkit_mount{}))), len(mounts))
	for i, m := range mounts {
		cm[i] = C.struct_sandkit_mount{path: l.cstring(m.path), kind: m.kind, src: -1, size: C.uint64_t(m.size), inodes: C.uint(policy.MaxTmpfsInodes), rdev: C.uint64_t(m.rdev)}
	}
	c.root, c.mounts, c.nmounts = 1, &cm[0], C.int(len(cm))
	c.send_mount = -1
	files := prog.Files
	if prog.InputPath != "" {
		files = append([]File{{Path: prog.InputPath, Content: prog.Input}}, files...)
	}
	if len(files) > 0 {
		cf := unsafe.Slice((*C.struct_sandkit_file)(l.alloc(uintptr(len(files))*unsafe.Sizeof(C.struct_sandkit_file{}))), len(files))
		used := make([]uint64, len(p.Filesystem.Tmpfs))
		for j, f := range files {
			i, _, ok := tmpfsIndex(p.Filesystem.Tmpfs, f.Path)
			if !ok {
				return nil, bad("input path %q is not an absolute, clean path inside a tmpfs of the policy", f.Path)
			}
			// sendfile from offset 0: a file, and the files must fit.
			var st unix.Stat_t
			if f.Content == nil || unix.Fstat(int(f.Content.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
				return nil, bad("input file %s needs content that is a regular file or a memfd", f.Path)
			}
			used[i] += uint64(st.Size)
			if used[i] > p.Filesystem.Tmpfs[i].Size {
				return nil, bad("the input files (%d bytes) are larger than the tmpfs at %s (%d bytes)", used[i], p.Filesystem.Tmpfs[i].Path, p.Filesystem.Tmpfs[i].Size)
			}
			cf[j] = C.struct_sandkit_file{path: l.cstring(f.Path), fd: C.int(f.Content.Fd())}
		}
		c.files, c.nfiles = &cf[0], C.int(len(cf))
	}
	if prog.Output.Kind == OutputFile {
		i, rel, ok := tmpfsIndex(p.Filesystem.Tmpfs, prog.Output.Path)
		if !ok {
			return nil, bad("output path %q is not an absolute, clean path inside a tmpfs of the policy", prog.Output.Path)
		}
		c.send_mount = C.int(firstTmpfs + i)
		l.fileOut, l.outRel = true, rel
	}
	if p.Namespaces.UTS {
		c.hostname = 1
	}

	// Descriptors: input and output at their numbers, stderr to the
	// log pipe (spawnForeign adds it), nothing else.
	nfds := max(prog.InputFD, outFD, 2) + 1
	fds := unsafe.Slice((*C.int)(l.alloc(uintptr(nfds)*unsafe.Sizeof(C.int(0)))), nfds)
	for i := range fds {
		fds[i] = -1
	}
	if prog.Input != nil && prog.InputPath == "" {
		fds[prog.InputFD] = C.int(prog.Input.Fd())
	}
	var fsize uint64
	switch prog.Output.Kind {
	case OutputPipe:
		var pp [2]int
		if err := unix.Pipe2(pp[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("broker: output pipe: %w", err)
		}
		// The read end non-blocking before os wraps it, so that the
		// broker reads it on the runtime's poller.
		if err := unix.SetNonblock(pp[0], true); err != nil {
			unix.Close(pp[0])
			unix.Close(pp[1])
			return nil, fmt.Errorf("broker: output pipe: %w", err)
		}
		l.outR, l.outW = os.NewFile(uintptr(pp[0]), "program-output"), os.NewFile(uintptr(pp[1]), "program-output")
	case OutputMemfd:
		page := uint64(os.Getpagesize())
		l.charge = max((prog.Output.Limit+page-1)/page*page, page)
		if l.charge > p.Limits.SharedMemory || prog.Output.Limit > maxAlloc {
			return nil, bad("an output memfd of %d bytes is over Limits.SharedMemory (%d) or %d", prog.Output.Limit, p.Limits.SharedMemory, uint64(maxAlloc))
		}
		l.memfd, _, err = blankMemfd(int64(prog.Output.Limit))
		if err != nil {
			return nil, fmt.Errorf("broker: output memfd: %w", err)
		}
		fsize = prog.Output.Limit
	case OutputFile:
		if outFD != 1 {
			return nil, bad("an output file has no output fd: stdout goes to the log")
		}
	case OutputDescriptor:
		if prog.Output.File == nil {
			return nil, bad("OutputDescriptor without Output.File")
		}
	default:
		return nil, bad("unknown output kind %d", prog.Output.Kind)
	}
	switch {
	case l.memfd != nil:
		fds[outFD] = C.int(l.memfd.Fd())
	case l.outW != nil:
		fds[outFD] = C.int(l.outW.Fd())
	case prog.Output.Kind == OutputDescriptor:
		fds[outFD] = C.int(prog.Output.File.Fd())
	}
	c.fds, c.nfds = &fds[0], C.int(nfds)
	path := l.cstring(prog.Path)
	c.prog = path
	c.exe_num, c.sock_num = C.int(exeNum), C.int(exeNum+1)

	// The listener's way to the broker.
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("broker: listener socket: %w", err)
	}
	l.sock = os.NewFile(uintptr(sp[0]), "listener-socket")
	l.files = append(l.files, os.NewFile(uintptr(sp[1]), "listener-socket"))
	c.sock = C.int(sp[1])

	// Limits: as a Go renderer's (renderer/lockdown.go setRlimits), but
	// the address space starts empty at exec, so RLIMIT_AS is Memory.
	lim := p.Limits
	cpu := lim.CPUSeconds()
	type rl struct {
		res int
		v   uint64
		on  bool
	}
	var rls []rl
	for _, x := range []rl{
		{unix.RLIMIT_CORE, 0, true},
		{unix.RLIMIT_FSIZE, max(lim.FileSize, fsize), true},
		{unix.RLIMIT_MEMLOCK, lim.LockedMemory, true},
		{unix.RLIMIT_DATA, lim.Memory, lim.Memory != 0},
		{unix.RLIMIT_AS, lim.Memory, lim.Memory != 0},
		{unix.RLIMIT_NOFILE, lim.OpenFiles, true},
		{unix.RLIMIT_NPROC, lim.Threads, lim.Threads != 0},
		{unix.RLIMIT_CPU, cpu, cpu != 0},
		{unix.RLIMIT_STACK, lim.Stack, lim.Stack != 0},
	} {
		if x.on {
			rls = append(rls, x)
		}
	}
	crl := unsafe.Slice((*C.struct_sandkit_rlimit)(l.alloc(uintptr(len(rls))*unsafe.Sizeof(C.struct_sandkit_rlimit{}))), len(rls))
	for i, x := range rls {
		crl[i] = C.struct_sandkit_rlimit{resource: C.int(x.res), value: C.uint64_t(x.v)}
	}
	c.limits, c.nlimits = &crl[0], C.int(len(crl))

	c.handled_fs, c.handled_net, c.scoped = C.uint64_t(plan.HandledFS), C.uint64_t(plan.HandledNet), C.uint64_t(plan.Scoped)
	c.read_rights, c.exec_rights, c.write_rights = C.uint64_t(plan.ReadRights), C.uint64_t(plan.ExecRights), C.uint64_t(plan.WriteRights)
	if plan.Seccomp != nil {
		n := len(plan.Seccomp)
		f := unsafe.Slice((*C.struct_sock_filter)(l.alloc(uintptr(n)*unsafe.Sizeof(C.struct_sock_filter{}))), n)
		for i, in := range plan.Seccomp {
			f[i] = C.struct_sock_filter{code: C.__u16(in.Code), jt: C.__u8(in.Jt), jf: C.__u8(in.Jf), k: C.__u32(in.K)}
		}
		c.filter, c.filter_len = &f[0], C.ushort(n)
		if plan.Notify {
			c.notify = 1
		}
	}
	l.argv = prog.Args
	if len(l.argv) == 0 {
		l.argv = []string{prog.Path}
	}
	c.argv = l.cstrings(l.argv)
	c.envp = l.cstrings(prog.Env)
	return l, nil
}

// beneathDir reports whether path is dir or inside it.
func beneathDir(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// launch starts the prepared program, counted in b.spawning by the
// caller, and returns it live: in b.live, bound to k, supervised, its
// listener with the monitor. EventReady and EventBound are emitted
// before supervise may record EventExited, so a program that exits at
// once still has its events in order.
func (b *Broker) launch(l *launchSpec, k key) (*Renderer, error) {
	count := spawnCount{b: b}
	defer count.done()
	logR, logW, err := logPipe()
	if err != nil {
		return nil, fmt.Errorf("broker: log pipe: %w", err)
	}
	defer logW.Close()
	fds := unsafe.Slice(l.c.fds, l.c.nfds)
	fds[2] = C.int(logW.Fd())
	if l.fileOut {
		fds[1] = C.int(logW.Fd())
	}
	hostID, err := b.allocID()
	if err != nil {
		logR.Close()
		return nil, err
	}
	spec := vforkSpec{path: "/", argv: l.argv, ns: cloneFlags(b.policy.Namespaces), hostID: hostID, launch: l.c}
	var pid, pidfd int
	b.spawner.run(func() { pid, pidfd, err = spawnVfork(spec) })
	// The program holds its copies now; the broker's go.
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
	if l.outW != nil && l.memfd == nil {
		l.outW.Close()
		l.outW = nil
	}
	if err != nil {
		b.releaseID(hostID)
		logR.Close()
		if l.outR != nil {
			l.outR.Close()
		}
		return nil, spawnErr(b.policy, err)
	}
	_ = unix.SetNonblock(pidfd, true)
	proc, _ := os.FindProcess(pid) // never fails on Unix
	r := &Renderer{
		b: b,
		reap: func() *os.ProcessState {
			state, _ := proc.Wait()
			return state
		},
		pid:      pid,
		pidfd:    os.NewFile(uintptr(pidfd), "pidfd"),
		started:  time.Now(),
		logs:     &logTail{},
		hostID:   hostID,
		ready:    make(chan struct{}),
		bound:    make(chan struct{}),
		exited:   make(chan struct{}),
		logsRead: make(chan struct{}),
		layers:   l.layers,
		gotReady: true,
		shared:   l.charge,
	}
	close(r.ready)
	close(r.bound)
	b.mu.Lock()
	count.goLive(r)
	r.key = &k // under b.mu, as forget reads it
	closed := b.closed
	b.mu.Unlock()
	if closed {
		// Close began during the spawn and waits for it: end it.
		r.kill(ExitShutdown, "")
	}
	// The output pipe is read to its end, like stderr, before supervise
	// classifies the exit (it waits for logsRead): a program that wrote
	// past the bound and exited at once is killed for the bound, not
	// ended clean.
	outDone := make(chan struct{})
	if l.outR != nil {
		l.outPipe = make(chan pipeOutput, 1)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer close(outDone)
			l.outPipe <- r.readOutput(l.outR, l.limit)
		}()
	} else {
		close(outDone)
	}
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		defer close(r.logsRead)
		r.readLogs(logR)
		<-outDone
	}()
	// supervise reaps the program and records its exit; it waits until
	// the program has been announced (or has failed to start).
	announced := make(chan struct{})
	go func() {
		defer b.wg.Done()
		<-announced
		r.supervise()
	}()
	if l.fileOut {
		// Sent before the listener, during the spawn: queued.
		dir, err := recvFD(l.sock, "output-tmpfs")
		if err != nil {
			r.kill(ExitLockdownFailed, "output tmpfs not received: "+err.Error())
			<-r.exited
			return nil, fmt.Errorf("broker: output tmpfs: %w", err)
		}
		l.outDir = dir
	}
	if l.notify {
		listener, err := recvFD(l.sock, "seccomp-listener")
		if err != nil {
			close(announced)
			// Fail closed: no program runs unwatched.
			r.kill(ExitLockdownFailed, "seccomp listener not received: "+err.Error())
			<-r.exited
			return nil, fmt.Errorf("broker: %w", &policy.UnavailableError{Layer: policy.LayerSeccompMonitor, Err: err})
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			r.monitor(listener)
		}()
	}
	b.emit(Event{Kind: EventReady, PID: r.pid, Layers: l.layers})
	b.emit(Event{Kind: EventBound, Origin: k.origin, Document: k.document, PID: r.pid})
	close(announced)
	return r, nil
}

// recvFD receives a descriptor the launcher sent before exec (the
// output tmpfs's directory, the seccomp listener). The launcher sends
// them before exec and the broker's vfork spawn returns after exec, so
// they are queued already: the read does not wait.
func recvFD(sock *os.File, name string) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if n != 1 || flags&unix.MSG_CTRUNC != 0 {
		return nil, errors.New("malformed listener message")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("malformed listener message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errors.New("malformed listener message")
	}
	return os.NewFile(uintptr(fds[0]), name), nil
}

// readOutput reads a program's output pipe until every writer is gone,
// keeping at most limit bytes; a program that writes more is killed
// (ExitBrokerLimit) and the rest is discarded.
func (r *Renderer) readOutput(f *os.File, limit uint64) pipeOutput {
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(min(limit, 1<<62))+1))
	if uint64(len(data)) > limit {
		r.kill(ExitBrokerLimit, fmt.Sprintf("output over %d bytes", limit))
		_, _ = io.Copy(io.Discard, f)
		return pipeOutput{data: data[:limit], err: err}
	}
	return pipeOutput{data: data, err: err}
}
