// shim.h is the whole C surface between Go and MuPDF. Every MuPDF call that
// can throw runs inside fz_try, so a hostile document can never reach
// MuPDF's "uncaught exception" path, which calls exit() on the process.
//
// Rules kept here (security review checklist):
//   - no `return` inside fz_try / fz_always (it would corrupt MuPDF's
//     exception stack); results go through out-parameters;
//   - every allocation MuPDF makes goes through sk_malloc/sk_realloc/sk_free,
//     which account bytes per document and refuse past the cap;
//   - the document bytes live in C memory owned by sk_doc (cgo forbids C
//     keeping Go pointers past a call), freed in sk_close;
//   - the only Go memory C touches is the caller's pixel buffer, and only for
//     the duration of sk_render.
#ifndef SANDKIT_DOCVIEWER_SHIM_H
#define SANDKIT_DOCVIEWER_SHIM_H

#include <mupdf/fitz.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// The document handlers MuPDF ships. Only the ones registered in sk_new are
// reachable; HTML, XHTML, plain text, gzip and office formats are not.
extern fz_document_handler pdf_document_handler;
extern fz_document_handler xps_document_handler;
extern fz_document_handler svg_document_handler;
extern fz_document_handler cbz_document_handler;
extern fz_document_handler img_document_handler;
extern fz_document_handler epub_document_handler;
extern fz_document_handler fb2_document_handler;
extern fz_document_handler mobi_document_handler;

// Four functions of MuPDF's PDF layer, declared by hand because go-fitz
// ships only the fitz headers. Their signatures are those of MuPDF 1.24
// (pdf/page.h, pdf/xref.h, pdf/document.h); the types stay opaque here.
typedef struct pdf_document pdf_document;
typedef struct pdf_page pdf_page;
typedef struct pdf_obj pdf_obj;
pdf_document *pdf_document_from_fz_document(fz_context *ctx, fz_document *ptr);
pdf_page *pdf_page_from_fz_page(fz_context *ctx, fz_page *ptr);
pdf_obj *pdf_page_contents(fz_context *ctx, pdf_page *page);
fz_stream *pdf_open_contents_stream(fz_context *ctx, pdf_document *doc, pdf_obj *obj);

enum {
	SK_MSG = 512,
	// Accounting header in front of every block: keeps the size and
	// preserves 16-byte alignment of the pointer MuPDF receives.
	SK_HDR = 16,
};

typedef struct {
	size_t cur, peak, cap;
	int alloc_refused;   // an allocation was refused because of cap
	int code;            // fz_caught() of the last failure
	char msg[SK_MSG];    // fz_caught_message() of the last failure
	int warnings;        // warnings MuPDF reported (not printed)
	char warn[SK_MSG];   // first warning
} sk_state;

typedef struct {
	sk_state st;
	fz_context *ctx;
	unsigned char *data; // the document bytes (C memory, not accounted)
	size_t len;
	fz_stream *stm;
	fz_document *doc;
	fz_page *page;       // the last page loaded, kept for plan+render
	int page_no;
	fz_cookie cookie;    // abort flag written by sk_abort from any thread
} sk_doc;

static void *sk_malloc(void *user, size_t size) {
	sk_state *st = user;
	if (size > st->cap || st->cur > st->cap - size || size > SIZE_MAX - SK_HDR) {
		st->alloc_refused = 1;
		return NULL;
	}
	unsigned char *p = malloc(size + SK_HDR);
	if (!p) return NULL;
	memcpy(p, &size, sizeof size);
	st->cur += size;
	if (st->cur > st->peak) st->peak = st->cur;
	return p + SK_HDR;
}

static void sk_free(void *user, void *ptr) {
	sk_state *st = user;
	if (!ptr) return;
	unsigned char *p = (unsigned char *)ptr - SK_HDR;
	size_t size;
	memcpy(&size, p, sizeof size);
	st->cur -= size;
	free(p);
}

static void *sk_realloc(void *user, void *old, size_t size) {
	sk_state *st = user;
	if (!old) return sk_malloc(user, size);
	if (size == 0) { sk_free(user, old); return NULL; }
	unsigned char *p = (unsigned char *)old - SK_HDR;
	size_t osize;
	memcpy(&osize, p, sizeof osize);
	if (size > osize && (size - osize > st->cap || st->cur > st->cap - (size - osize) || size > SIZE_MAX - SK_HDR)) {
		st->alloc_refused = 1;
		return NULL;
	}
	unsigned char *q = realloc(p, size + SK_HDR);
	if (!q) return NULL;
	memcpy(q, &size, sizeof size);
	st->cur = st->cur - osize + size;
	if (st->cur > st->peak) st->peak = st->cur;
	return q + SK_HDR;
}

// MuPDF's locks. A context is only ever used by one thread at a time and
// is never cloned, so the state behind FZ_LOCK_ALLOC (refcounts, store) and
// FZ_LOCK_GLYPHCACHE is private to it and needs no lock. FZ_LOCK_FREETYPE
// also guards process-wide state: the harfbuzz allocator hook MuPDF sets for
// text shaping (EPUB/FB2/MOBI layout). That one mutex is shared by every
// context in the process. In a one-document renderer process it is never
// contended; in-process (tests, benchmarks) it makes parallel documents safe.
// (Sharing all three serialized every refcount change across documents and
// made 4 parallel documents slower than one.)
static pthread_mutex_t sk_freetype_mutex = PTHREAD_MUTEX_INITIALIZER;
_Static_assert(FZ_LOCK_MAX == 3, "MuPDF changed its locks: review sk_lock");
static void sk_lock(void *user, int lock) {
	(void)user;
	if (lock == FZ_LOCK_FREETYPE) pthread_mutex_lock(&sk_freetype_mutex);
}
static void sk_unlock(void *user, int lock) {
	(void)user;
	if (lock == FZ_LOCK_FREETYPE) pthread_mutex_unlock(&sk_freetype_mutex);
}

static void sk_on_error(void *user, const char *msg) {
	(void)user; (void)msg; // the caught message is read in fz_catch instead
}

static void sk_on_warning(void *user, const char *msg) {
	sk_state *st = user;
	if (st->warnings++ == 0) {
		strncpy(st->warn, msg, SK_MSG - 1);
		st->warn[SK_MSG - 1] = 0;
	}
}

static void sk_record(sk_doc *d) {
	d->st.code = fz_caught(d->ctx);
	strncpy(d->st.msg, fz_caught_message(d->ctx), SK_MSG - 1);
	d->st.msg[SK_MSG - 1] = 0;
}

// sk_new creates a context whose allocations are capped at heap_cap bytes.
// It returns NULL if even that fails (or if the headers do not match the
// linked library: fz_new_context checks FZ_VERSION).
static sk_doc *sk_new(size_t heap_cap, size_t store_max) {
	sk_doc *d = calloc(1, sizeof *d);
	if (!d) return NULL;
	d->st.cap = heap_cap;
	d->page_no = -1;
	fz_alloc_context alloc = { &d->st, sk_malloc, sk_realloc, sk_free };
	fz_locks_context locks = { NULL, sk_lock, sk_unlock };
	d->ctx = fz_new_context(&alloc, &locks, store_max);
	if (!d->ctx) { free(d); return NULL; }
	fz_set_error_callback(d->ctx, sk_on_error, &d->st);
	fz_set_warning_callback(d->ctx, sk_on_warning, &d->st);
	int ok = 1;
	fz_try(d->ctx) {
		fz_register_document_handler(d->ctx, &pdf_document_handler);
		fz_register_document_handler(d->ctx, &xps_document_handler);
		fz_register_document_handler(d->ctx, &svg_document_handler);
		fz_register_document_handler(d->ctx, &cbz_document_handler);
		fz_register_document_handler(d->ctx, &img_document_handler);
		fz_register_document_handler(d->ctx, &epub_document_handler);
		fz_register_document_handler(d->ctx, &fb2_document_handler);
		fz_register_document_handler(d->ctx, &mobi_document_handler);
	}
	fz_catch(d->ctx) {
		ok = 0;
	}
	if (!ok) { fz_drop_context(d->ctx); free(d); return NULL; }
	return d;
}

static void sk_close(sk_doc *d) {
	if (!d) return;
	fz_drop_page(d->ctx, d->page);
	fz_drop_document(d->ctx, d->doc);
	fz_drop_stream(d->ctx, d->stm);
	fz_drop_context(d->ctx);
	free(d->data);
	free(d);
}

// sk_open opens the document held in d->data. magic is a MIME type or file
// extension; MuPDF's content sniffing runs first, magic is the fallback.
static int sk_open(sk_doc *d, const char *magic) {
	int ok = 1;
	fz_try(d->ctx) {
		d->stm = fz_open_memory(d->ctx, d->data, d->len);
		d->doc = fz_open_document_with_stream(d->ctx, magic, d->stm);
		if (fz_needs_password(d->ctx, d->doc))
			fz_throw(d->ctx, FZ_ERROR_UNSUPPORTED, "document is password protected");
	}
	fz_catch(d->ctx) {
		sk_record(d);
		ok = 0;
	}
	return ok;
}

static int sk_format(sk_doc *d, char *buf, int size) {
	int ok = 1;
	buf[0] = 0;
	fz_try(d->ctx) {
		fz_lookup_metadata(d->ctx, d->doc, FZ_META_FORMAT, buf, size);
	}
	fz_catch(d->ctx) {
		sk_record(d);
		ok = 0;
	}
	return ok;
}

static int sk_count(sk_doc *d, int *n) {
	int ok = 1;
	fz_try(d->ctx) {
		*n = fz_count_pages(d->ctx, d->doc);
	}
	fz_catch(d->ctx) {
		sk_record(d);
		ok = 0;
	}
	return ok;
}

// sk_load makes page_no the current page.
static int sk_load(sk_doc *d, int page_no) {
	if (d->page && d->page_no == page_no) return 1;
	fz_drop_page(d->ctx, d->page);
	d->page = NULL;
	d->page_no = -1;
	int ok = 1;
	fz_try(d->ctx) {
		d->page = fz_load_page(d->ctx, d->doc, page_no);
		d->page_no = page_no;
	}
	fz_catch(d->ctx) {
		sk_record(d);
		ok = 0;
	}
	return ok;
}

// sk_bound returns the page's bounds in points.
static int sk_bound(sk_doc *d, int page_no, fz_rect *r) {
	if (!sk_load(d, page_no)) return 0;
	int ok = 1;
	fz_try(d->ctx) {
		*r = fz_bound_page(d->ctx, d->page);
		if (fz_is_empty_rect(*r) || fz_is_infinite_rect(*r))
			fz_throw(d->ctx, FZ_ERROR_FORMAT, "page has empty or infinite bounds");
	}
	fz_catch(d->ctx) {
		sk_record(d);
		ok = 0;
	}
	return ok;
}

// sk_plan returns the pixel box of page_no at zoom (dpi/72), computed exactly
// as sk_render will use it, so the caller can check it against its budget
// and size the buffer before anything is drawn.
static int sk_plan(sk_doc *d, int page_no, float zoom, fz_irect *box) {
	fz_rect r;
	if (!sk_bound(d, page_no, &r)) return 0;
	*box = fz_round_rect(fz_transform_rect(r, fz_scale(zoom, zoom)));
	return 1;
}

// sk_check_contents decodes a PDF page's content streams once, counting
// bytes, and throws FZ_ERROR_LIMIT past max_bytes. MuPDF interprets content
// as a stream and only checks its abort flag between operators, so a
// compression bomb of whitespace (1 GiB of NULs in 5 KB) would otherwise
// keep it busy for seconds with no way to stop it; this pass is abortable
// every MiB and deterministic. Costs one extra inflate of normal-sized
// content. Must be called inside fz_try.
static void sk_check_contents(sk_doc *d, size_t max_bytes) {
	fz_context *ctx = d->ctx;
	pdf_document *pdoc = pdf_document_from_fz_document(ctx, d->doc);
	pdf_page *ppage = pdf_page_from_fz_page(ctx, d->page);
	if (!pdoc || !ppage) return; // not a PDF
	fz_stream *stm = pdf_open_contents_stream(ctx, pdoc, pdf_page_contents(ctx, ppage));
	size_t total = 0, n;
	fz_try(ctx) {
		do {
			if (__atomic_load_n(&d->cookie.abort, __ATOMIC_SEQ_CST))
				fz_throw(ctx, FZ_ERROR_ABORT, "rendering aborted");
			n = fz_skip(ctx, stm, 1 << 20);
			total += n;
			if (total > max_bytes)
				fz_throw(ctx, FZ_ERROR_LIMIT, "page content decodes to more than %zu bytes", max_bytes);
		} while (n > 0);
	}
	fz_always(ctx) {
		fz_drop_stream(ctx, stm);
	}
	fz_catch(ctx) {
		fz_rethrow(ctx);
	}
}

// sk_render draws page_no at zoom into samples (RGBA, premultiplied, white
// background), which must hold stride*(box.y1-box.y0) bytes where box is
// what sk_plan returned for the same arguments. Nothing is allocated for the
// pixels: MuPDF draws straight into the caller's memory.
static int sk_render(sk_doc *d, int page_no, float zoom, fz_irect box, unsigned char *samples, int stride, size_t max_content) {
	fz_irect want;
	if (!sk_plan(d, page_no, zoom, &want)) return 0;
	if (want.x0 != box.x0 || want.y0 != box.y0 || want.x1 != box.x1 || want.y1 != box.y1) {
		d->st.code = FZ_ERROR_ARGUMENT;
		strcpy(d->st.msg, "render box does not match plan");
		return 0;
	}
	fz_pixmap *pix = NULL;
	fz_device *dev = NULL;
	int ok = 1;
	fz_var(pix);
	fz_var(dev);
	fz_try(d->ctx) {
		sk_check_contents(d, max_content);
		pix = fz_new_pixmap_with_data(d->ctx, fz_device_rgb(d->ctx), box.x1 - box.x0, box.y1 - box.y0, NULL, 1, stride, samples);
		pix->x = box.x0;
		pix->y = box.y0;
		fz_clear_pixmap_with_value(d->ctx, pix, 0xff);
		dev = fz_new_draw_device(d->ctx, fz_scale(zoom, zoom), pix);
		fz_run_page(d->ctx, d->page, dev, fz_identity, &d->cookie);
		fz_close_device(d->ctx, dev);
		if (__atomic_load_n(&d->cookie.abort, __ATOMIC_SEQ_CST))
			fz_throw(d->ctx, FZ_ERROR_ABORT, "rendering aborted");
	}
	fz_always(d->ctx) {
		fz_drop_device(d->ctx, dev);
		fz_drop_pixmap(d->ctx, pix);
	}
	fz_catch(d->ctx) {
		sk_record(d);
		ok = 0;
	}
	return ok;
}

// sk_reset_cookie clears the abort flag and counters before a render; the
// caller runs it before it arms anything that may call sk_abort.
static void sk_reset_cookie(sk_doc *d) {
	memset(&d->cookie, 0, sizeof d->cookie);
}

// sk_abort asks a running sk_render to stop at its next check. It is the
// only function that may be called concurrently with the others.
static void sk_abort(sk_doc *d) {
	__atomic_store_n(&d->cookie.abort, 1, __ATOMIC_SEQ_CST);
}

static int sk_render_errors(sk_doc *d) {
	return d->cookie.errors;
}

#endif
