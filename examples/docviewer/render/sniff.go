package render

import (
	"bytes"
)

// Sniff names the format of data from its first bytes, and the MIME type
// handed to MuPDF as a hint. It returns "", "" for anything outside the
// allowlist, which Open refuses before MuPDF parses a byte. MuPDF's own
// content recognition still decides the handler, but only the handlers of
// these formats are registered (see internal/mupdf), so the allowlist holds
// either way: no HTML, XHTML, plain text, gzip or office documents.
func Sniff(data []byte) (kind, mime string) {
	head := data[:min(len(data), 4096)]
	switch {
	case bytes.Contains(head[:min(len(head), 1024)], []byte("%PDF-")):
		return "pdf", "application/pdf"
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return "png", "image/png"
	case bytes.HasPrefix(head, []byte("\xff\xd8\xff")):
		return "jpeg", "image/jpeg"
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return "gif", "image/gif"
	case bytes.HasPrefix(head, []byte("BM")) && len(head) >= 26:
		return "bmp", "image/bmp"
	case bytes.HasPrefix(head, []byte("II*\x00")), bytes.HasPrefix(head, []byte("MM\x00*")):
		return "tiff", "image/tiff"
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		switch {
		// EPUB's first entry must be an uncompressed "mimetype" file; its
		// data follows the 30-byte header, the name and the extra field.
		case len(head) >= 38 && string(head[30:38]) == "mimetype" &&
			bytes.HasPrefix(head[min(len(head), 38+int(head[28])|int(head[29])<<8):], []byte("application/epub+zip")):
			return "epub", "application/epub+zip"
		case bytes.Contains(data, []byte("FixedDocumentSequence")), bytes.Contains(data, []byte("FixedDocSeq")):
			return "xps", "application/oxps"
		default:
			return "cbz", "application/vnd.comicbook+zip"
		}
	case len(head) >= 68 && string(head[60:68]) == "BOOKMOBI":
		return "mobi", "application/x-mobipocket-ebook"
	}
	text := bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n")
	if bytes.HasPrefix(text, []byte("<")) {
		switch {
		case bytes.Contains(head, []byte("<FictionBook")):
			return "fb2", "application/x-fictionbook+xml"
		case bytes.Contains(head, []byte("<svg")):
			return "svg", "image/svg+xml"
		}
	}
	return "", ""
}
