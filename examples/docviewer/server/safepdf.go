package server

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// Bounds of the safe PDF downloads (GET {doc}/safe.pdf).
const (
	// maxConversions is how many documents are converted at once; more
	// wait for a turn (bounded by safeTimeout), with their progress shown
	// as queued.
	maxConversions = 2
	// safeTimeout bounds one conversion, queueing included.
	safeTimeout = 10 * time.Minute
)

// safeJobs converts documents to safe PDFs for download. Requests for the
// same document while it converts share one conversion, and the browser
// polls its progress at {doc}/safe.json. The PDF is written to a private
// temporary directory of its own (0700), served, and removed once the last
// request that waited for it is done: nothing is kept.
type safeJobs struct {
	turn chan struct{}
	mu   sync.Mutex
	jobs map[string]*safeJob // by docRef.Base
	// recent keeps how each conversion ended for a while after its
	// download is done, for the page polling its progress.
	recent map[string]recentJob
}

type recentJob struct {
	p     safeProgress
	until time.Time
}

// recentFor is how long recent keeps an ended conversion's outcome.
const recentFor = time.Minute

func newSafeJobs() *safeJobs {
	return &safeJobs{turn: make(chan struct{}, maxConversions), jobs: map[string]*safeJob{}, recent: map[string]recentJob{}}
}

type safeJob struct {
	done   chan struct{} // closed when path or err is set
	cancel context.CancelFunc
	// Guarded by safeJobs.mu.
	waiters      int
	queued       bool
	pages, total int
	dir, path    string
	err          error
	msg          string // err explained (docRef.explain)
}

// safeProgress is the JSON of {doc}/safe.json.
type safeProgress struct {
	State string `json:"state"` // "idle", "queued", "converting", "done", "failed"
	Done  int    `json:"done"`
	Total int    `json:"total"`
	Error string `json:"error,omitempty"`
}

// join returns the conversion of d, started if none runs, with the
// caller counted as a waiter; the caller must call leave.
func (j *safeJobs) join(d docRef, dpi float64) *safeJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	if job := j.jobs[d.Base]; job != nil {
		job.waiters++
		return job
	}
	ctx, cancel := context.WithTimeout(context.Background(), safeTimeout)
	job := &safeJob{done: make(chan struct{}), cancel: cancel, waiters: 1, queued: true}
	j.jobs[d.Base] = job
	go j.run(ctx, job, d, dpi)
	return job
}

// leave drops a waiter; the last one out cancels an unfinished
// conversion and removes the finished file.
func (j *safeJobs) leave(d docRef, job *safeJob) {
	j.mu.Lock()
	job.waiters--
	last := job.waiters == 0
	if last && j.jobs[d.Base] == job {
		delete(j.jobs, d.Base)
	}
	j.mu.Unlock()
	if !last {
		return
	}
	job.cancel()
	<-job.done
	j.mu.Lock()
	now := time.Now()
	for k, r := range j.recent {
		if now.After(r.until) {
			delete(j.recent, k)
		}
	}
	j.recent[d.Base] = recentJob{j.outcome(job), now.Add(recentFor)}
	j.mu.Unlock()
	if job.dir != "" {
		os.RemoveAll(job.dir)
	}
}

func (j *safeJobs) run(ctx context.Context, job *safeJob, d docRef, dpi float64) {
	defer close(job.done)
	fail := func(err error) {
		j.mu.Lock()
		job.err, job.msg = err, d.explain(err)
		j.mu.Unlock()
	}
	select {
	case j.turn <- struct{}{}:
		defer func() { <-j.turn }()
	case <-ctx.Done():
		fail(fmt.Errorf("waiting for a turn to convert: %w", ctx.Err()))
		return
	}
	j.mu.Lock()
	job.queued = false
	j.mu.Unlock()
	dir, err := os.MkdirTemp("", "docviewer-safe-*")
	if err != nil {
		fail(fmt.Errorf("temporary directory: %w", err))
		return
	}
	path := filepath.Join(dir, "safe.pdf")
	_, err = convert.ToPDF(ctx, d.be, d.ID, path, dpi, pdfout.Options{}, func(done, total int) {
		j.mu.Lock()
		job.pages, job.total = done, total
		j.mu.Unlock()
	})
	j.mu.Lock()
	defer j.mu.Unlock()
	job.dir = dir
	if err != nil {
		job.err, job.msg = err, d.explain(err)
		return
	}
	job.path = path
}

func (j *safeJobs) progress(base string) safeProgress {
	j.mu.Lock()
	defer j.mu.Unlock()
	job := j.jobs[base]
	if job == nil {
		if r, ok := j.recent[base]; ok && time.Now().Before(r.until) {
			return r.p
		}
		return safeProgress{State: "idle"}
	}
	return j.outcome(job)
}

// outcome is job's progress; j.mu must be held.
func (j *safeJobs) outcome(job *safeJob) safeProgress {
	switch {
	case job.err != nil:
		return safeProgress{State: "failed", Done: job.pages, Total: job.total, Error: job.msg}
	case job.path != "":
		return safeProgress{State: "done", Done: job.pages, Total: job.total}
	case job.queued:
		return safeProgress{State: "queued"}
	}
	return safeProgress{State: "converting", Done: job.pages, Total: job.total}
}

// safePDF converts d (or joins its running conversion) and sends the
// result as an attachment named after the document.
func (s *Server) safePDF(w http.ResponseWriter, r *http.Request, d docRef) {
	if crossSite(w, r) {
		return
	}
	job := s.safe.join(d, convert.DefaultDPI)
	defer s.safe.leave(d, job)
	select {
	case <-job.done:
	case <-r.Context().Done():
		return
	}
	if job.err != nil {
		http.Error(w, "safe PDF: "+job.msg, statusOf(job.err))
		return
	}
	f, err := os.Open(job.path)
	if err != nil {
		http.Error(w, "safe PDF: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "safe PDF: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": safeName(d.Name)}))
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

func (s *Server) safeJSON(w http.ResponseWriter, d docRef) {
	b, err := json.Marshal(s.safe.progress(d.Base))
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// safeName is the download's file name: NAME-safe.pdf as convert names
// it, from the display name with anything but letters, digits, space and
// ".-_" replaced, so the header carries no quote, slash or control byte.
func safeName(name string) string {
	name = strings.TrimSuffix(name, filepath.Ext(name))
	name = strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(" .-_", r) {
			return r
		}
		return '_'
	}, name)
	name = strings.Trim(name, " .")
	if r := []rune(name); len(r) > 100 {
		name = string(r[:100])
	}
	if name == "" {
		name = "document"
	}
	return name + "-safe.pdf"
}
