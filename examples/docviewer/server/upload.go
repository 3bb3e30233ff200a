package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// UploadConfig bounds web mode. Zero fields take the defaults.
type UploadConfig struct {
	// Dir is where the private store is created (a fresh 0700 directory
	// inside it). Empty means os.TempDir().
	Dir string
	// MaxBytes bounds one upload (default 32 MiB; larger ones get 413
	// without being stored).
	MaxBytes int64
	// MaxPerClient bounds the uploads one client (remote IP address) has
	// stored at once (default 8); past it, 429 until one expires.
	MaxPerClient int
	// MaxUploads and MaxTotalBytes bound the whole store (default 256
	// documents, 2 GiB); past them, 503 with Retry-After.
	MaxUploads    int
	MaxTotalBytes int64
	// TTL is how long an upload is kept (default 30 minutes).
	TTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Office converts uploads whose file name says they are Office
	// documents (office.Is) to PDF, in LibreOffice's sandbox, before
	// they are stored: the store keeps that PDF, rendered like any
	// other. Nil (LibreOffice is not installed) refuses them with 415
	// and what to install.
	Office *office.Converter
}

// Per-client bounds on requests in flight, for the folder's documents and
// for uploaded ones apart (clientTurns). A browser opens at most 6
// connections to a host, so an honest viewer never meets the page bound; a
// script that asks for hundreds of pages at once waits its turn instead of
// taking every renderer's time.
const (
	maxClientUploads = 2 // uploads being received at once
	maxClientPages   = 6 // page requests in flight
	maxClientSafe    = 1 // safe PDF conversions
	// clientWait bounds how long a page request waits for its client's
	// turn before it gets 429.
	clientWait = 30 * time.Second
)

// Uploads is web mode's private store of uploaded documents. Each upload
// is a file of its own, named by 128 random bits, in a directory only this
// process can read; the store's library lists exactly those files for the
// backend, which hands them to renderers as it does the folder's. An
// upload is never served back: the only routes for it are its pixels, its
// safe PDF and its error, under /u/ID, where ID is the library id of the
// random name (64 unguessable bits: the URL is the capability). Uploads
// expire after TTL and are deleted, and the store is removed on Close.
type Uploads struct {
	cfg  UploadConfig
	dir  string
	lib  *library.Library
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	entries   map[string]*upload // by library id
	bytes     int64              // stored plus reserved
	receiving map[string]int     // uploads in progress, by client
	turns     *clientTurns       // requests in flight, by kind and client
	// forget, if set, ends the renderer of an expired upload
	// (backend.Forgetter) instead of leaving it to its idle timeout, and
	// drops its recognised words.
	forget func(doc string)
}

type upload struct {
	id, file string // library id, random file name
	name     string // the name the client gave, cleaned, display only
	client   string
	size     int64
	expires  time.Time
}

// NewUploads creates the private store and starts its expiry loop, which
// ends with ctx or Close.
func NewUploads(ctx context.Context, cfg UploadConfig) (*Uploads, error) {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 32 << 20
	}
	if cfg.MaxPerClient <= 0 {
		cfg.MaxPerClient = 8
	}
	if cfg.MaxUploads <= 0 {
		cfg.MaxUploads = 256
	}
	if cfg.MaxTotalBytes <= 0 {
		cfg.MaxTotalBytes = 2 << 30
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := os.MkdirTemp(cfg.Dir, "docviewer-uploads-*") // 0700
	if err != nil {
		return nil, fmt.Errorf("upload store: %w", err)
	}
	lib, err := library.Open(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("upload store: %w", err)
	}
	u := &Uploads{cfg: cfg, dir: dir, lib: lib, log: cfg.Logger, stop: make(chan struct{}),
		entries: map[string]*upload{}, receiving: map[string]int{}, turns: newClientTurns()}
	u.wg.Add(1)
	go u.expire(ctx)
	return u, nil
}

// Library lists the stored uploads, for the backend that renders them.
func (u *Uploads) Library() *library.Library { return u.lib }

// Close stops expiry and deletes the store with every upload in it.
func (u *Uploads) Close() error {
	select {
	case <-u.stop:
	default:
		close(u.stop)
	}
	u.wg.Wait()
	return os.RemoveAll(u.dir)
}

func (u *Uploads) expire(ctx context.Context) {
	defer u.wg.Done()
	t := time.NewTicker(min(max(u.cfg.TTL/10, 100*time.Millisecond), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.stop:
			return
		case now := <-t.C:
			u.removeExpired(now)
		}
	}
}

func (u *Uploads) removeExpired(now time.Time) {
	u.mu.Lock()
	var gone []*upload
	for id, e := range u.entries {
		if now.After(e.expires) {
			gone = append(gone, e)
			delete(u.entries, id)
			u.bytes -= e.size
		}
	}
	forget := u.forget
	u.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	for _, e := range gone {
		if err := os.Remove(filepath.Join(u.dir, e.file)); err != nil {
			u.log.Warn("remove expired upload", "id", e.id, "err", err)
		}
		if forget != nil {
			forget(e.id)
		}
		u.log.Info("upload expired", "id", e.id, "client", e.client)
	}
	if err := u.lib.Refresh(); err != nil {
		u.log.Warn("upload store listing", "err", err)
	}
}

// lookup returns a live upload.
func (u *Uploads) lookup(id string) (*upload, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.entries[id]
	if !ok || time.Now().After(e.expires) {
		return nil, false
	}
	return e, true
}

// errUploadLimit is a refusal that names the bound and the status it maps to.
type errUploadLimit struct {
	status int
	msg    string
}

func (e *errUploadLimit) Error() string { return e.msg }

// reserve takes a receiving slot and MaxBytes of room for client, or
// says which bound refuses it.
func (u *Uploads) reserve(client string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	mine := 0
	for _, e := range u.entries {
		if e.client == client {
			mine++
		}
	}
	switch {
	case u.receiving[client] >= maxClientUploads:
		return &errUploadLimit{http.StatusTooManyRequests, fmt.Sprintf("upload limit: %d uploads at once per client", maxClientUploads)}
	case mine+u.receiving[client] >= u.cfg.MaxPerClient:
		return &errUploadLimit{http.StatusTooManyRequests, fmt.Sprintf("upload limit: %d documents per client; each is deleted %s after its upload", u.cfg.MaxPerClient, durationText(u.cfg.TTL))}
	case len(u.entries)+u.inFlight() >= u.cfg.MaxUploads, u.bytes+u.cfg.MaxBytes > u.cfg.MaxTotalBytes:
		return &errUploadLimit{http.StatusServiceUnavailable, "the upload store is full; try again later"}
	}
	u.receiving[client]++
	u.bytes += u.cfg.MaxBytes
	return nil
}

func (u *Uploads) inFlight() int {
	n := 0
	for _, c := range u.receiving {
		n += c
	}
	return n
}

// unreserve gives back what reserve took; stored, if not nil, becomes
// an entry in its place.
func (u *Uploads) unreserve(client string, stored *upload) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.receiving[client]--; u.receiving[client] == 0 {
		delete(u.receiving, client)
	}
	u.bytes -= u.cfg.MaxBytes
	if stored != nil {
		u.bytes += stored.size
		u.entries[stored.id] = stored
	}
}

// receive stores the "file" part of a multipart upload from client.
func (u *Uploads) receive(r *http.Request, client string) (*upload, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, &errUploadLimit{http.StatusUnsupportedMediaType, "want a multipart/form-data upload"}
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, &errUploadLimit{http.StatusBadRequest, "no file in the upload"}
	}
	defer part.Close()
	if part.FormName() != "file" {
		return nil, &errUploadLimit{http.StatusBadRequest, `the upload's first part must be the field "file"`}
	}
	var rnd [16]byte
	rand.Read(rnd[:])
	file := hex.EncodeToString(rnd[:])
	path := filepath.Join(u.dir, file)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store upload: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(part, u.cfg.MaxBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || n > u.cfg.MaxBytes:
		err = &errUploadLimit{http.StatusRequestEntityTooLarge, fmt.Sprintf("the document is larger than %s", humanSize(u.cfg.MaxBytes))}
	case err != nil:
		err = &errUploadLimit{http.StatusBadRequest, "upload interrupted"}
	case n == 0:
		err = &errUploadLimit{http.StatusBadRequest, "the document is empty"}
	}
	if err == nil && office.Is(part.FileName()) {
		n, err = u.officeToPDF(r.Context(), client, path, part.FileName())
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	if err := u.lib.Refresh(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("store upload: %w", err)
	}
	return &upload{id: library.IDOf(file), file: file, name: displayName(part.FileName()),
		client: client, size: n, expires: time.Now().Add(u.cfg.TTL)}, nil
}

// officeToPDF replaces the stored Office document at path by the PDF
// LibreOffice makes of it, in a sandbox of its own, and returns the
// PDF's size. The PDF is as untrusted as the upload: it is stored, and
// rendered, like an uploaded PDF.
func (u *Uploads) officeToPDF(ctx context.Context, client, path, name string) (int64, error) {
	if u.cfg.Office == nil {
		return 0, &errUploadLimit{http.StatusUnsupportedMediaType, "Office documents need LibreOffice, which this server does not have; to install it: " + office.InstallHint}
	}
	doc, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("store upload: %w", err)
	}
	res, err := u.cfg.Office.ToPDF(ctx, client, doc, name)
	doc.Close()
	if err != nil {
		u.log.Info("office upload refused", "client", client, "err", err)
		return 0, &errUploadLimit{http.StatusUnprocessableEntity, err.Error()}
	}
	if int64(len(res.PDF)) > u.cfg.MaxBytes {
		return 0, &errUploadLimit{http.StatusRequestEntityTooLarge, fmt.Sprintf("the PDF of the document is larger than %s", humanSize(u.cfg.MaxBytes))}
	}
	u.log.Info("office upload converted", "client", client, "took", res.Took, "bytes", len(res.PDF), "layers", res.Layers.String())
	// A new file at the same name: the document's bytes are gone.
	if err := os.Remove(path); err != nil {
		return 0, fmt.Errorf("store upload: %w", err)
	}
	if err := os.WriteFile(path, res.PDF, 0o600); err != nil {
		return 0, fmt.Errorf("store upload: %w", err)
	}
	return int64(len(res.PDF)), nil
}

// durationText is d for people: "30 minutes", "2 hours", else as Go
// prints it.
func durationText(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int(d/time.Hour), "hour", "hours")
	case d >= time.Minute && d%time.Minute == 0:
		return plural(int(d/time.Minute), "minute", "minutes")
	}
	return d.String()
}

// displayName cleans the name a client gave its file for display: its
// base name, control and format characters dropped, at most 120 runes.
func displayName(name string) string {
	name = name[strings.LastIndexAny(name, `/\`)+1:]
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return -1
		}
		return r
	}, name)
	if r := []rune(name); len(r) > 120 {
		name = string(r[:120])
	}
	if strings.TrimSpace(name) == "" {
		return "upload"
	}
	return name
}

// clientOf names the client for fairness: the remote IPv4 address, or
// the /64 of an IPv6 one (a host usually has a whole /64 to pick
// addresses from). Behind a proxy every client is the proxy; forwarded
// headers are not trusted.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// crossSite refuses (403) a request a browser says another site made:
// an <img> or link elsewhere must not make this server draw pages or
// convert documents. Requests without Sec-Fetch-Site (older browsers,
// other clients) pass; "none" is a typed URL or a bookmark.
func crossSite(w http.ResponseWriter, r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return false
	}
	http.Error(w, "cross-site request refused", http.StatusForbidden)
	return true
}

// checkOrigin is the CSRF defence of the upload, on top of the Host
// check: a browser sends Origin with every POST, and it must be this
// server under one of its accepted hosts. A request without Origin (not
// a browser's, or a very old one) is refused too, as is one whose
// Sec-Fetch-Site says another site made it.
func (s *Server) checkOrigin(r *http.Request) error {
	o := r.Header.Get("Origin")
	if o == "" {
		return errors.New("missing Origin header")
	}
	ou, err := url.Parse(o)
	if err != nil || (ou.Scheme != "http" && ou.Scheme != "https") || ou.Path != "" || ou.User != nil {
		return fmt.Errorf("unexpected Origin %q", o)
	}
	if !slices.Contains(s.hosts, strings.ToLower(ou.Host)) {
		return fmt.Errorf("cross-origin upload from %q refused", o)
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("cross-site upload refused (Sec-Fetch-Site: %s)", site)
	}
	return nil
}

// WithUploads turns on web mode: uploads go to u and are rendered by be,
// a backend over u.Library().
func WithUploads(u *Uploads, be backend.Backend) Option {
	return func(s *Server) {
		s.uploads, s.upBE = u, be
		f, _ := be.(backend.Forgetter)
		u.mu.Lock()
		u.forget = func(id string) {
			if f != nil {
				f.Forget(id)
			}
			s.wordCache.forget("/u/" + id)
		}
		u.mu.Unlock()
	}
}

// uploadPage is the upload form (GET /upload).
func (s *Server) uploadPage(w http.ResponseWriter) {
	s.render(w, "upload.html", struct {
		MaxBytes string
		Max      int64
		TTL      string
	}{humanSize(s.uploads.cfg.MaxBytes), s.uploads.cfg.MaxBytes, durationText(s.uploads.cfg.TTL)})
}

// upload receives POST /upload and answers where its viewer is: a 303 for
// the form, JSON for app.js (Accept: application/json).
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, msg string) {
		if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "60")
		}
		http.Error(w, msg, status)
	}
	if err := s.checkOrigin(r); err != nil {
		fail(http.StatusForbidden, err.Error())
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		fail(http.StatusUnsupportedMediaType, "want a multipart/form-data upload")
		return
	}
	client := clientOf(r)
	if err := s.uploads.reserve(client); err != nil {
		var le *errUploadLimit
		errors.As(err, &le)
		fail(le.status, le.msg)
		return
	}
	// The multipart framing around the file is small; 64 KiB is room
	// for it and a long file name.
	r.Body = http.MaxBytesReader(w, r.Body, s.uploads.cfg.MaxBytes+64<<10)
	e, err := s.uploads.receive(r, client)
	s.uploads.unreserve(client, e)
	if err != nil {
		var le *errUploadLimit
		if errors.As(err, &le) {
			fail(le.status, le.msg)
		} else {
			s.log.Error("upload", "client", client, "err", err)
			fail(http.StatusInternalServerError, "could not store the upload")
		}
		return
	}
	s.log.Info("upload stored", "id", e.id, "client", client, "bytes", e.size, "expires", e.expires)
	target := "/u/" + e.id
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		b, _ := json.Marshal(struct {
			URL string `json:"url"`
		}{target})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(b)
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// uploaded routes /u/ID/... for a live upload.
func (s *Server) uploaded(w http.ResponseWriter, r *http.Request, seg []string) {
	if !idRE.MatchString(seg[1]) {
		http.NotFound(w, r)
		return
	}
	e, ok := s.uploads.lookup(seg[1])
	if !ok {
		http.Error(w, "no such upload: uploads are deleted "+durationText(s.uploads.cfg.TTL)+" after they are made", http.StatusNotFound)
		return
	}
	d := docRef{ID: e.id, Name: e.name, Base: "/u/" + e.id, be: s.upBE, stored: e.file}
	switch {
	case len(seg) == 2:
		s.viewer(w, r, d, true)
	case len(seg) == 4 && seg[2] == "page":
		if release, ok := pageTurn(w, r, s.uploads.turns); ok {
			defer release()
			s.pageFile(w, r, d, seg[3])
		}
	case len(seg) == 3 && seg[2] == "safe.pdf":
		if crossSite(w, r) {
			return
		}
		if release, ok := safeTurn(w, r, s.uploads.turns); ok {
			defer release()
			s.safePDF(w, r, d)
		}
	case len(seg) == 3 && seg[2] == "safe.json":
		s.safeJSON(w, d)
	default:
		http.NotFound(w, r)
	}
}
