package sandboxed

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// newTestConverter starts LibreOffice's converter, or fails (skips with
// DOCVIEWER_SKIP_OFFICE=1) without LibreOffice.
func newTestConverter(t *testing.T) *office.Converter {
	t.Helper()
	if err := office.Available(); err != nil {
		if os.Getenv("DOCVIEWER_SKIP_OFFICE") == "1" {
			t.Skipf("%v (DOCVIEWER_SKIP_OFFICE=1)", err)
		}
		t.Fatalf("%v; or set DOCVIEWER_SKIP_OFFICE=1 to skip the Office tests", err)
	}
	conv, err := office.New(context.Background(), slog.New(slog.DiscardHandler), 2)
	require.NoError(t, err)
	t.Cleanup(func() { conv.Close() })
	return conv
}

// folderBackend serves dir, converting Office documents with conv.
func folderBackend(t *testing.T, dir string, conv *office.Converter) *Backend {
	t.Helper()
	lib, err := library.Open(dir)
	require.NoError(t, err)
	b, err := New(context.Background(), Config{Library: lib, Logger: testLogger(t), Office: conv})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

// endRenderers ends every document's renderer, as the idle timeout
// would, and waits until they are gone.
func endRenderers(t *testing.T, b *Backend) {
	t.Helper()
	b.mu.Lock()
	for _, s := range b.sessions {
		s.mu.Lock()
		if s.c != nil {
			s.c.r.Close()
		}
		s.mu.Unlock()
	}
	b.mu.Unlock()
	require.Eventually(t, func() bool { return len(b.b.Renderers()) == 0 }, time.Minute, 10*time.Millisecond)
}

// TestOfficeDocuments: a folder's .docx and .xlsx are converted by
// LibreOffice when first opened and viewed like PDFs (three pages, two).
// The PDF is kept: a document whose renderer ended is given it again
// without a second conversion, until the document changes. A damaged
// one fails as corrupt, once.
func TestOfficeDocuments(t *testing.T) {
	conv := newTestConverter(t)
	dir := folder(t, "office/text.docx=report.docx", "office/sheet.xlsx=figures.xlsx", "valid/multipage.pdf")
	b := folderBackend(t, dir, conv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	report, figures := library.IDOf("report.docx"), library.IDOf("figures.xlsx")

	for _, tc := range []struct {
		id    string
		pages int
	}{{report, 3}, {figures, 2}, {library.IDOf("multipage.pdf"), 20}} {
		n, err := b.PageCount(ctx, tc.id)
		require.NoError(t, err)
		assert.Equal(t, tc.pages, n)
		p, err := b.RenderPage(ctx, tc.id, n-1, 36)
		require.NoError(t, err)
		assert.False(t, p.Image.Bounds().Empty())
		p.Release()
	}
	assert.Equal(t, 2, b.office.conversions(), "one conversion per Office document, none for the PDF")
	entries, err := os.ReadDir(b.office.dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2)
	info, err := os.Stat(b.office.dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "the PDFs' directory is private")

	// The renderers end (as when idle); the report is given its kept PDF.
	endRenderers(t, b)
	n, err := b.PageCount(ctx, report)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, 2, b.office.conversions(), "the kept PDF is used")

	// The document changes (a new modification time): converted again.
	endRenderers(t, b)
	path := filepath.Join(dir, "report.docx")
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(path, later, later))
	n, err = b.PageCount(ctx, report)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, 3, b.office.conversions(), "a changed document is converted again")
	entries, err = os.ReadDir(b.office.dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "the old PDF is deleted")

	// Forgotten: its PDF goes.
	b.Forget(report)
	entries, err = os.ReadDir(b.office.dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1)

	store := b.office.dir
	require.NoError(t, b.Close())
	_, err = os.Stat(store)
	assert.ErrorIs(t, err, os.ErrNotExist, "Close deletes the PDFs")
}

// TestOfficeDocumentDamaged: a truncated .docx fails as corrupt, with
// LibreOffice's reason, and a second request gets the same error without
// a second conversion.
func TestOfficeDocumentDamaged(t *testing.T) {
	conv := newTestConverter(t)
	dir := folder(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "office", "text.docx"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.docx"), data[:len(data)/2], 0o644))
	b := folderBackend(t, dir, conv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := library.IDOf("broken.docx")
	_, err = b.PageCount(ctx, id)
	require.ErrorIs(t, err, docerr.ErrCorrupt)
	require.ErrorIs(t, err, office.ErrConversion)
	assert.Contains(t, err.Error(), "wrote no PDF")
	_, again := b.PageCount(ctx, id)
	assert.Equal(t, err.Error(), again.Error())
	assert.Equal(t, 1, b.office.conversions(), "converted once")
	assert.Empty(t, b.b.Renderers(), "no MuPDF renderer was started")
}

// TestOfficeDocumentsWithoutLibreOffice: without a converter an Office
// document is refused as unsupported, saying what to install, and no
// renderer starts.
func TestOfficeDocumentsWithoutLibreOffice(t *testing.T) {
	b := newBackend(t, nil, "office/text.docx=report.docx")
	_, err := b.PageCount(context.Background(), library.IDOf("report.docx"))
	require.ErrorIs(t, err, docerr.ErrUnsupported)
	assert.Contains(t, err.Error(), "report.docx: Office documents need LibreOffice")
	assert.Contains(t, err.Error(), office.InstallHint)
	assert.Empty(t, b.b.Renderers())
}

// TestOfficeConverterUnavailable: when LibreOffice's sandbox cannot start
// (here its converter is closed), the request fails without blaming the
// document: nothing is remembered, the next request tries again.
func TestOfficeConverterUnavailable(t *testing.T) {
	conv := newTestConverter(t)
	require.NoError(t, conv.Close())
	b := folderBackend(t, folder(t, "office/text.docx=report.docx"), conv)
	for range 2 {
		_, err := b.PageCount(context.Background(), library.IDOf("report.docx"))
		require.ErrorIs(t, err, broker.ErrClosed)
		assert.Nil(t, docerr.KindOf(err), "not a document error: %v", err)
	}
	assert.Equal(t, 2, b.office.conversions(), "tried again")
}
