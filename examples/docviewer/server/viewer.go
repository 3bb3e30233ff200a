package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
)

// Bounds of the resolution a page request may ask for (?dpi=N). A request
// outside them is drawn at the nearest bound, never refused: the viewer
// asks for what the zoom and the screen need, and the server, not the
// page, decides what a request may cost. 600 dpi is a Letter page of
// 5100x6600 px: beyond it a screen gains nothing and each request costs
// 130 MB of pixels. Both lie inside doclimits.Default's [36, 1200].
const (
	MinPageDPI = 36
	MaxPageDPI = 600
)

// probeDPI is the resolution of the first page drawn to learn its size
// before the viewer is sent: the lowest the limits allow, a few
// milliseconds of drawing, and the same request as page 1's thumbnail.
const probeDPI = MinPageDPI

// docRef is a document the viewer shows, from the folder (/doc/ID) or an
// upload (/u/ID), with the backend that renders it.
type docRef struct {
	ID   string
	Name string // display only
	Base string // URL prefix of its routes, e.g. /doc/0123456789abcdef
	be   backend.Backend
	// stored is an upload's file name in the store, which the backend's
	// errors name; explain shows Name instead.
	stored string
}

// explain is err's text for the person viewing d.
func (d docRef) explain(err error) string {
	if d.stored == "" {
		return err.Error()
	}
	return strings.ReplaceAll(err.Error(), d.stored, d.Name)
}

// viewerData is what doc.html shows.
type viewerData struct {
	Doc   docRef
	Pages int
	Err   string
	Kind  string
	// WidthPt and HeightPt are the first page's size in points (1/72 in),
	// from a probe render; every page's placeholder has that size until
	// its image arrives, so that the pages below the fold really are
	// below it and are not requested.
	WidthPt, HeightPt float64
	// PageW and PageH are those in CSS pixels at 100 % (96 px per inch),
	// ThumbW and ThumbH a thumbnail's.
	PageW, PageH   int
	ThumbW, ThumbH int
	MinDPI, MaxDPI int
	Upload         bool
}

// thumbWidth is the thumbnails' width in CSS pixels.
const thumbWidth = 120

// viewer shows the document: toolbar, thumbnails and one placeholder per
// page, which app.js fills as the page nears the viewport.
func (s *Server) viewer(w http.ResponseWriter, r *http.Request, d docRef, upload bool) {
	ctx, cancel := context.WithTimeout(r.Context(), openTimeout)
	defer cancel()
	data := viewerData{Doc: d, MinDPI: MinPageDPI, MaxDPI: MaxPageDPI, Upload: upload,
		// US Letter until the probe says otherwise.
		WidthPt: 612, HeightPt: 792}
	n, err := d.be.PageCount(ctx, d.ID)
	data.Pages = n
	if err == nil {
		if p, perr := d.be.RenderPage(ctx, d.ID, 0, probeDPI); perr == nil {
			b := p.Image.Bounds()
			data.WidthPt = math.Round(float64(b.Dx())*72/p.DPI*10) / 10
			data.HeightPt = math.Round(float64(b.Dy())*72/p.DPI*10) / 10
			p.Release()
		}
		// A first page that fails shows as failed in the viewer; the
		// others may still be fine.
	}
	data.PageW = int(math.Round(data.WidthPt * 96 / 72))
	data.PageH = int(math.Round(data.HeightPt * 96 / 72))
	data.ThumbW = thumbWidth
	// Bounded: a hostile first page may be a sliver of any aspect.
	data.ThumbH = int(min(max(math.Round(thumbWidth*data.HeightPt/data.WidthPt), 8), 20*thumbWidth))
	if err != nil {
		data.Err = d.explain(err)
		if k := docerr.KindOf(err); k != nil {
			data.Kind = k.Error()
		}
		// The page itself is fine; the document is not: 200 with the error
		// in the page, so the person sees why.
	}
	s.render(w, "doc.html", data)
}

// pageDPI reads the optional ?dpi=N of a page request: absent means the
// server's default; a whole number is clamped to [MinPageDPI,
// MaxPageDPI]; anything else is a bad request.
func (s *Server) pageDPI(q url.Values) (float64, error) {
	v, ok := q["dpi"]
	if !ok {
		return s.dpi, nil
	}
	if len(v) != 1 || len(v[0]) > 6 {
		return 0, fmt.Errorf("dpi: want one whole number")
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		return 0, fmt.Errorf("dpi: want one whole number")
	}
	return float64(min(max(n, MinPageDPI), MaxPageDPI)), nil
}

// renderPage answers one page as PNG at the resolution the request asks
// for, within the bounds.
func (s *Server) renderPage(w http.ResponseWriter, r *http.Request, d docRef, file string) {
	if crossSite(w, r) {
		return
	}
	m := pageRE.FindStringSubmatch(file)
	if m == nil {
		http.NotFound(w, r)
		return
	}
	dpi, err := s.pageDPI(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n, _ := strconv.Atoi(m[1])
	ctx, cancel := context.WithTimeout(r.Context(), renderTimeout)
	defer cancel()
	p, err := d.be.RenderPage(ctx, d.ID, n-1, dpi)
	if err != nil {
		if errors.Is(err, docerr.ErrBusy) {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, d.explain(err), statusOf(err))
		return
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	err = enc.Encode(&buf, p.Image)
	p.Release() // the PNG is all that is kept
	if err != nil {
		http.Error(w, "encode page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Header().Set("X-Render-DPI", strconv.FormatFloat(p.DPI, 'f', -1, 64))
	w.Write(buf.Bytes())
}

// plural is "1 page", "2 pages".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
