package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
)

// WithOCR gives the viewer a text layer: rec (the OCR engine, which runs
// in a sandbox of its own) reads the words of a page from the pixels the
// backend checked, and the viewer lays them, invisible, over the page
// image, so that the browser's find and text selection work on them. Safe
// PDFs then carry the same words as an invisible text layer, as convert
// -ocr writes them. The words are the OCR engine's output, hostile like
// any: ParseTSV bounded and checked them, and the viewer sets them as
// text, never as markup.
func WithOCR(rec convert.Recognizer) Option {
	return func(s *Server) {
		s.ocr = rec
		s.safe.rec = rec
	}
}

// ocrDPI is the resolution pages are recognised at: the safe PDF's, so a
// page's words are read once for the viewer and the download alike.
const ocrDPI = convert.DefaultDPI

// wordsRE is a page's words route, /page/N.words.json.
var wordsRE = regexp.MustCompile(`^([1-9][0-9]{0,5})\.words\.json$`)

// pageWords is what /page/N.words.json answers: the words found in the
// page drawn at DPI, in that image's pixels (Width by Height).
type pageWords struct {
	DPI    float64    `json:"dpi"`
	Width  int        `json:"width"`
	Height int        `json:"height"`
	Words  []wordJSON `json:"words"`
}

type wordJSON struct {
	Text string `json:"text"`
	X    int    `json:"x"`
	Y    int    `json:"y"`
	W    int    `json:"w"`
	H    int    `json:"h"`
}

// pageFile answers a file under a document's /page/: the image, or with
// OCR on, its words.
func (s *Server) pageFile(w http.ResponseWriter, r *http.Request, d docRef, file string) {
	if m := wordsRE.FindStringSubmatch(file); m != nil {
		n, _ := strconv.Atoi(m[1])
		s.words(w, r, d, n)
		return
	}
	s.renderPage(w, r, d, file)
}

// words recognises page n of d (1-based), once: the answer is kept in
// s.wordCache until the cache needs room or the document goes.
func (s *Server) words(w http.ResponseWriter, r *http.Request, d docRef, n int) {
	if s.ocr == nil {
		http.Error(w, "this server has no OCR (serve -ocr LANG)", http.StatusNotFound)
		return
	}
	if crossSite(w, r) {
		return
	}
	key := d.Base + "/" + strconv.Itoa(n)
	body, ok := s.wordCache.get(key)
	if !ok {
		var err error
		body, err = s.recognize(r.Context(), d, n)
		if err != nil {
			if errors.Is(err, docerr.ErrBusy) {
				w.Header().Set("Retry-After", retryAfter)
			}
			http.Error(w, d.explain(err), statusOf(err))
			return
		}
		s.wordCache.put(key, body)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func (s *Server) recognize(ctx context.Context, d docRef, n int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, renderTimeout)
	defer cancel()
	p, err := d.be.RenderPage(ctx, d.ID, n-1, ocrDPI)
	if err != nil {
		return nil, err
	}
	defer p.Release()
	found, err := s.ocr.Words(ctx, d.ID, n-1, p.Image)
	if err != nil {
		return nil, docerr.New(docerr.ErrSandbox, err, "%s: page %d: OCR", d.Name, n)
	}
	b := p.Image.Bounds()
	out := pageWords{DPI: p.DPI, Width: b.Dx(), Height: b.Dy(), Words: make([]wordJSON, 0, len(found))}
	for _, wd := range found {
		out.Words = append(out.Words, wordJSON{Text: wd.Text, X: wd.Box.Min.X, Y: wd.Box.Min.Y, W: wd.Box.Dx(), H: wd.Box.Dy()})
	}
	return json.Marshal(out)
}

// maxCachedPages bounds the pages whose words are kept: a page's words
// are a few KB of JSON, and recognising one costs seconds of a sandbox.
const maxCachedPages = 1024

// wordCache keeps recognised pages, oldest out first.
type wordCache struct {
	mu    sync.Mutex
	pages map[string][]byte
	order []string
}

func newWordCache() *wordCache { return &wordCache{pages: map[string][]byte{}} }

func (c *wordCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.pages[key]
	return b, ok
}

func (c *wordCache) put(key string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pages[key]; ok {
		return
	}
	for len(c.order) >= maxCachedPages {
		delete(c.pages, c.order[0])
		c.order = c.order[1:]
	}
	c.pages[key] = b
	c.order = append(c.order, key)
}

// forget drops every page of the document whose routes start with base
// (an expired upload's words must not outlive it).
func (c *wordCache) forget(base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.order[:0]
	for _, k := range c.order {
		if strings.HasPrefix(k, base+"/") {
			delete(c.pages, k)
			continue
		}
		kept = append(kept, k)
	}
	c.order = kept
}
