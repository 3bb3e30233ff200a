package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// TestUploadOffice: an uploaded .docx is converted by LibreOffice, in its
// sandbox, when it arrives; the store keeps only the PDF, which is viewed
// like any other upload (three pages).
func TestUploadOffice(t *testing.T) {
	if err := office.Available(); err != nil {
		if os.Getenv("DOCVIEWER_SKIP_OFFICE") == "1" {
			t.Skipf("%v (DOCVIEWER_SKIP_OFFICE=1)", err)
		}
		t.Fatalf("%v; or set DOCVIEWER_SKIP_OFFICE=1 to skip the Office tests", err)
	}
	conv, err := office.New(context.Background(), slog.New(slog.DiscardHandler), 1)
	require.NoError(t, err)
	t.Cleanup(func() { conv.Close() })
	s, up := newUploadServer(t, UploadConfig{Office: conv})
	docx := sample(t, "office/text.docx")
	rec := serve(s, uploadReq(t, "report.docx", docx, "192.0.2.1", map[string]string{"Origin": "http://" + addr, "Accept": "application/json"}))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	var got struct{ URL string }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	files := storeFiles(t, up)
	require.Len(t, files, 1)
	stored, err := os.ReadFile(filepath.Join(up.dir, files[0]))
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(stored, []byte("%PDF-")), "the store keeps the PDF")
	assert.NotEqual(t, docx, stored)

	page := do(s, "GET", got.URL, addr)
	require.Equal(t, http.StatusOK, page.Code)
	assert.Contains(t, page.Body.String(), `data-pages="3"`)
	img := do(s, "GET", got.URL+"/page/3.png?dpi=36", addr)
	require.Equal(t, http.StatusOK, img.Code, img.Body.String())
}

// TestUploadOfficeRefused: without LibreOffice (no converter), an Office
// upload is refused with 415 and what to install, and nothing is stored
// or started.
func TestUploadOfficeRefused(t *testing.T) {
	s, up := newUploadServer(t, UploadConfig{})
	for _, name := range []string{"a.docx", "b.XLSX", "c.odp", "d.rtf"} {
		rec := serve(s, uploadReq(t, name, []byte("PK\x03\x04 whatever"), "192.0.2.1", map[string]string{"Origin": "http://" + addr}))
		assert.Equal(t, http.StatusUnsupportedMediaType, rec.Code, name)
		assert.Contains(t, rec.Body.String(), "apt-get install libreoffice-core-nogui libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui", name)
	}
	assert.Empty(t, storeFiles(t, up))
}
