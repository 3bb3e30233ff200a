// Command loadtest measures `docviewer serve` under load, on loopback
// only: it writes generated documents to a temporary directory, starts the
// docviewer executable on 127.0.0.1 (a port the kernel picks) with a small
// -max-renderers, so that documents compete for renderers, and has
// -clients parallel clients fetch -requests pages spread over the
// documents. It reports failures (any answer but 200 for these valid
// documents, after honouring 503's Retry-After at most -retries times),
// p50/p99/max latency, the server's peak resident size, and its resident
// size after the load, once every renderer has ended, against its idle
// size before the load. It exits 1 if a page failed or the resident size
// after the load is more than -rss-slack above idle.
//
//	go build -o /tmp/docviewer . && go run ./internal/loadtest -bin /tmp/docviewer
//
// Bounded: -requests pages, each with a -request-timeout, the whole run
// within -timeout; the server is killed at the end whatever happens.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/internal/textpdf"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

type config struct {
	bin            string
	docs           int
	clients        int
	requests       int
	maxRenderers   int
	dpi            float64
	idle           time.Duration
	timeout        time.Duration
	requestTimeout time.Duration
	retries        int
	rssSlack       float64
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "", "the docviewer executable (required)")
	flag.IntVar(&c.docs, "docs", 20, "documents (generated text PDFs of 1 to 24 pages)")
	flag.IntVar(&c.clients, "clients", 50, "parallel clients")
	flag.IntVar(&c.requests, "requests", 2000, "page requests in all")
	flag.IntVar(&c.maxRenderers, "max-renderers", 8, "the server's -max-renderers")
	flag.Float64Var(&c.dpi, "dpi", 110, "the server's -dpi")
	flag.DurationVar(&c.idle, "idle-timeout", 3*time.Second, "the server's -idle-timeout (renderers end this long after the load)")
	flag.DurationVar(&c.timeout, "timeout", 15*time.Minute, "bound on the whole run")
	flag.DurationVar(&c.requestTimeout, "request-timeout", 2*time.Minute, "bound on one request")
	flag.IntVar(&c.retries, "retries", 3, "times a client retries a 503 after its Retry-After")
	flag.Float64Var(&c.rssSlack, "rss-slack", 0.20, "allowed growth of the resident size after the load over idle")
	flag.Parse()
	if c.bin == "" || c.docs < 1 || c.clients < 1 || c.requests < 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ok, err := run(ctx, c, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// doc is one generated document.
type doc struct {
	id    string
	name  string
	pages int
}

// writeDocs writes n text PDFs of 1 to 24 pages into dir.
func writeDocs(dir string, n int) ([]doc, error) {
	var docs []doc
	for i := range n {
		d := doc{name: fmt.Sprintf("doc%02d.pdf", i), pages: 1 + (i*7)%24}
		d.id = library.IDOf(d.name)
		if err := os.WriteFile(filepath.Join(dir, d.name), textpdf.Generate(d.pages), 0o644); err != nil {
			return nil, err
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// server is the docviewer serve process.
type server struct {
	cmd  *exec.Cmd
	url  string
	logs *logTail
}

var urlRE = regexp.MustCompile(`url=(http://127\.0\.0\.1:[0-9]+/)`)

func startServer(ctx context.Context, c config, dir string) (*server, error) {
	cmd := exec.CommandContext(ctx, c.bin, "serve", "-addr", "127.0.0.1:0",
		"-max-renderers", strconv.Itoa(c.maxRenderers), "-idle-timeout", c.idle.String(),
		"-dpi", strconv.FormatFloat(c.dpi, 'f', -1, 64), dir)
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, logs: &logTail{}}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.logs.add(line)
			if m := urlRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s.url = <-found:
		return s, nil
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	s.stop()
	return nil, fmt.Errorf("server did not start; its log:\n%s", s.logs.String())
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// logTail keeps the server's log: counted lines and the last ones.
type logTail struct {
	mu    sync.Mutex
	lines []string
	count map[string]int
}

func (l *logTail) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count == nil {
		l.count = map[string]int{}
	}
	for _, k := range []string{"level=WARN", "level=ERROR", "evicted to make room", "warm pool refill failed", "request queue full"} {
		if strings.Contains(line, k) {
			l.count[k]++
		}
	}
	l.lines = append(l.lines, line)
	if len(l.lines) > 200 {
		l.lines = l.lines[1:]
	}
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *logTail) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.count {
		out[k] = v
	}
	return out
}

// rssParts returns the process's resident size by kind: anonymous (heap,
// stacks), file-backed (the executable's code and data as touched) and
// shared memory (page regions), in bytes, as "anon/file/shmem".
func rssParts(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "RssAnon:" || f[0] == "RssFile:" || f[0] == "RssShmem:") {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			parts = append(parts, fmt.Sprintf("%.1f", float64(v)/1024))
		}
	}
	return strings.Join(parts, "/") + " MiB anon/file/shmem"
}

// rss returns the process's resident and peak resident size (VmRSS,
// VmHWM) in bytes.
func rss(pid int) (cur, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = v << 10
		case "VmHWM:":
			peak = v << 10
		}
	}
	return cur, peak, nil
}

// result is one page request's fate.
type result struct {
	status  int
	latency time.Duration
	retried int
	err     error
	body    string
}

func run(ctx context.Context, c config, out io.Writer) (bool, error) {
	dir, err := os.MkdirTemp("", "docviewer-loadtest-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	docs, err := writeDocs(dir, c.docs)
	if err != nil {
		return false, err
	}
	srv, err := startServer(ctx, c, dir)
	if err != nil {
		return false, err
	}
	defer srv.stop()
	pid := srv.cmd.Process.Pid
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c.clients, DisableCompression: true}}

	// Idle: the server listening and its warm pool ready ("cold": before
	// any request), then once more after one page of one document and
	// that renderer's end ("idle"): the code a page runs (PNG, zlib,
	// metrics) is then resident, as it stays in any server that has
	// served a page. The bound applies to the latter.
	if err := waitFor(ctx, 30*time.Second, func() bool { return warmReady(ctx, client, srv.url) }); err != nil {
		return false, fmt.Errorf("warm pool not ready: %w", err)
	}
	time.Sleep(time.Second)
	coldRSS, _, err := rss(pid)
	if err != nil {
		return false, err
	}
	coldParts := rssParts(pid)
	if r := fetch(ctx, client, fmt.Sprintf("%sdoc/%s/page/1.png", srv.url, docs[0].id), c); r.err != nil || r.status != http.StatusOK {
		return false, fmt.Errorf("warm-up page: %d %v %s", r.status, r.err, r.body)
	}
	client.CloseIdleConnections()
	if err := waitFor(ctx, c.idle+60*time.Second, func() bool { return renderersAlive(ctx, client, srv.url) == 0 }); err != nil {
		return false, fmt.Errorf("warm-up renderer did not end: %w", err)
	}
	client.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	idleRSS, _, err := rss(pid)
	if err != nil {
		return false, err
	}
	idleParts := rssParts(pid)

	// The load.
	var peakRSS atomic.Int64
	peakRSS.Store(idleRSS)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				if cur, _, err := rss(pid); err == nil && cur > peakRSS.Load() {
					peakRSS.Store(cur)
				}
			}
		}
	}()
	rng := rand.New(rand.NewPCG(2026, 15))
	work := make(chan string, c.requests)
	for range c.requests {
		d := docs[rng.IntN(len(docs))]
		work <- fmt.Sprintf("%sdoc/%s/page/%d.png", srv.url, d.id, 1+rng.IntN(d.pages))
	}
	close(work)
	results := make(chan result, c.requests)
	start := time.Now()
	var wg sync.WaitGroup
	for range c.clients {
		wg.Go(func() {
			for u := range work {
				results <- fetch(ctx, client, u, c)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(results)
	close(stopSampling)
	<-sampled
	_, hwm, _ := rss(pid)

	var lat []time.Duration
	failures := map[string]int{}
	var failed, retried int
	var example string
	for r := range results {
		retried += r.retried
		if r.err == nil && r.status == http.StatusOK {
			lat = append(lat, r.latency)
			continue
		}
		failed++
		key := strconv.Itoa(r.status)
		if r.err != nil {
			key = r.err.Error()
		}
		failures[key]++
		if example == "" {
			example = strings.TrimSpace(r.body)
		}
	}
	slices.Sort(lat)
	status := statusAfter(ctx, client, srv.url)

	// After: every renderer ended (idle timeout), regions unmapped.
	// The clients go away too: their connections' buffers and
	// goroutines in the server are not the server's to keep.
	client.CloseIdleConnections()
	afterErr := waitFor(ctx, c.idle+60*time.Second, func() bool { return renderersAlive(ctx, client, srv.url) == 0 })
	client.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	afterRSS, _, err := rss(pid)
	if err != nil {
		return false, err
	}
	afterParts := rssParts(pid)

	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Fprintf(out, "docviewer loadtest: %d clients, %d page requests over %d documents (text PDFs, %g dpi), -max-renderers %d\n",
		c.clients, c.requests, c.docs, c.dpi, c.maxRenderers)
	fmt.Fprintf(out, "  elapsed          %.1f s (%.1f pages/s)\n", elapsed.Seconds(), float64(len(lat))/elapsed.Seconds())
	fmt.Fprintf(out, "  failures         %d %v\n", failed, failures)
	if example != "" {
		fmt.Fprintf(out, "  first failure    %s\n", example)
	}
	fmt.Fprintf(out, "  503 retried      %d\n", retried)
	if len(lat) > 0 {
		fmt.Fprintf(out, "  latency          p50 %v  p99 %v  max %v\n", pct(lat, 50), pct(lat, 99), lat[len(lat)-1])
	}
	fmt.Fprintf(out, "  server RSS       cold %s  idle %s  peak %s (sampled; VmHWM %s)  after %s (%+.0f %% of idle)\n",
		mib(coldRSS), mib(idleRSS), mib(peakRSS.Load()), mib(hwm), mib(afterRSS), 100*(float64(afterRSS)/float64(idleRSS)-1))
	fmt.Fprintf(out, "  RSS by kind      cold %s; idle %s; after %s\n", coldParts, idleParts, afterParts)
	fmt.Fprintf(out, "  server status    %s\n", status)
	fmt.Fprintf(out, "  server log       %v\n", srv.logs.counts())
	ok := failed == 0
	if afterErr != nil {
		fmt.Fprintf(out, "FAIL: renderers still alive after the load: %v\n", afterErr)
		ok = false
	}
	if float64(afterRSS) > float64(idleRSS)*(1+c.rssSlack) {
		fmt.Fprintf(out, "FAIL: resident size after the load is more than %.0f %% over idle\n", 100*c.rssSlack)
		ok = false
	}
	if failed > 0 {
		fmt.Fprintf(out, "FAIL: %d of %d valid pages failed\n", failed, c.requests)
	}
	if ok {
		fmt.Fprintln(out, "ok")
	}
	return ok, nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(time.Millisecond)
}

// fetch gets one page, retrying a 503 after its Retry-After.
func fetch(ctx context.Context, client *http.Client, url string, c config) result {
	start := time.Now()
	var r result
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			return result{err: err, latency: time.Since(start), retried: r.retried}
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		r = result{status: resp.StatusCode, err: err, retried: r.retried}
		if resp.StatusCode != http.StatusOK {
			r.body = string(body[:min(len(body), 300)])
		}
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < c.retries {
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			r.retried++
			select {
			case <-time.After(time.Duration(max(secs, 1)) * time.Second):
				continue
			case <-ctx.Done():
				return result{err: ctx.Err()}
			}
		}
		r.latency = time.Since(start)
		return r
	}
}

func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// metric reads one sample from /metrics, or -1.
func metric(ctx context.Context, client *http.Client, base, name string) float64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return -1
	}
	return v
}

func warmReady(ctx context.Context, client *http.Client, base string) bool {
	return metric(ctx, client, base, "docviewer_warm_pool_ready") >= 2
}

func renderersAlive(ctx context.Context, client *http.Client, base string) int {
	// Warm renderers stay: only bound ones must have ended.
	alive := metric(ctx, client, base, "docviewer_renderers_alive")
	warm := metric(ctx, client, base, "docviewer_warm_pool_ready")
	if alive < 0 || warm < 0 {
		return -1
	}
	return int(alive - warm)
}

func statusAfter(ctx context.Context, client *http.Client, base string) string {
	var parts []string
	for _, n := range []string{"docviewer_renderers_spawned_total", "docviewer_renderer_evictions_total", "docviewer_requests_rejected_total", `docviewer_pages_total{outcome="ok"}`, "docviewer_warm_pool_ready", "docviewer_warm_pool_refill_failures_total"} {
		v := metric(ctx, client, base, n)
		if v < 0 {
			err := errors.New("absent")
			parts = append(parts, n+"="+err.Error())
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%g", strings.TrimPrefix(n, "docviewer_"), v))
	}
	return strings.Join(parts, " ")
}
