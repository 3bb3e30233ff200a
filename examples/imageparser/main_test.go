package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/imageparser/imagerenderer"
)

// TestMain doubles as the renderer, exactly like main.
func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(imagerenderer.Register)
	}
	os.Exit(m.Run())
}

// samples are the valid corpus files: the demo's inputs.
func samples(t *testing.T) (valid, all []string) {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() == "README.md" {
			continue
		}
		path := filepath.Join("testdata", e.Name())
		all = append(all, path)
		if isSample(e.Name()) {
			valid = append(valid, path)
		}
	}
	return valid, all
}

// isSample matches the valid images of testdata/README.md by name.
func isSample(name string) bool {
	for _, s := range []string{
		"png_640x480.png", "png_1x1.png", "png_gray16_64x64.png", "png_disguised.jpg",
		"jpeg_640x480.jpg", "jpeg_300x1000.jpg", "gif_anim_400x300_3frames.gif",
		"gif_partial_frame_200x100.gif", "bmp_101x67_24bit.bmp", "bmp_200x150_8bit.bmp",
		"tiff_500x375_deflate.tif", "tiff_multi_ifd_64x48.tif", "webp_lossy_640x480.webp",
		"webp_lossless_300x1000.webp", "webp_alpha_200x150.webp",
	} {
		if s == name {
			return true
		}
	}
	return false
}

// TestCommand runs the command as the demo does; the exact lines are
// checked in package parser.
func TestCommand(t *testing.T) {
	valid, all := samples(t)
	require.Len(t, valid, 15)
	tests := []struct {
		name     string
		args     []string
		files    []string
		code     int
		ok, fail int
	}{
		{name: "samples", files: valid, code: 0, ok: 15},
		{name: "samples warm", args: []string{"-warm", "2"}, files: valid, code: 0, ok: 15},
		{name: "whole corpus", files: all, code: 1, ok: 15, fail: len(all) - 15},
		{name: "few files", files: valid[:3], code: 0, ok: 3},
		{name: "one bad file", files: []string{"testdata/text_as.png"}, code: 1, fail: 1},
		{name: "budget from the flag", args: []string{"-max-pixels", "100000"}, files: []string{"testdata/png_640x480.png"}, code: 1, fail: 1},
		{name: "missing file", files: []string{"testdata/nope.png", "testdata/png_1x1.png"}, code: 1, ok: 1, fail: 1},
		{name: "no files", code: 2},
		{name: "bad flag", args: []string{"-max-pixels", "0"}, files: valid[:1], code: 2},
		{name: "unknown flag", args: []string{"-frobnicate"}, files: valid[:1], code: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := append(append([]string{"-out", out}, tc.args...), tc.files...)
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, &stdout, &stderr)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr.String())
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if stdout.Len() == 0 {
				lines = nil
			}
			var ok, fail int
			for i, l := range lines {
				switch {
				case strings.HasPrefix(l, "OK "+tc.files[i]+" "):
					ok++
				case strings.HasPrefix(l, "FAIL "+tc.files[i]+": "):
					fail++
				default:
					t.Errorf("line %d out of order or malformed: %q", i, l)
				}
			}
			assert.Equal(t, tc.ok, ok, stdout.String())
			assert.Equal(t, tc.fail, fail, stdout.String())
			// Progress is for a terminal; stderr here is a buffer.
			assert.NotContains(t, stderr.String(), "[1/")
			entries, err := os.ReadDir(out)
			require.NoError(t, err)
			assert.Len(t, entries, tc.ok)
		})
	}
}

// A symbolic link among the inputs is refused, even to a valid image, so
// that no input is a file a link's owner chose; nothing of the target is
// quoted.
func TestSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link.png")
	require.NoError(t, os.Symlink("/etc/passwd", link))
	valid, err := filepath.Abs("testdata/png_1x1.png")
	require.NoError(t, err)
	validLink := filepath.Join(dir, "valid.png")
	require.NoError(t, os.Symlink(valid, validLink))
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-out", t.TempDir(), link, validLink}, &stdout, &stderr)
	assert.Equal(t, 1, code, stderr.String())
	assert.Equal(t, "FAIL "+link+": a symbolic link; name the file itself\nFAIL "+validLink+": a symbolic link; name the file itself\n", stdout.String())
}

// Each bad flag value is named with what is wrong with it.
func TestBadFlagsSayWhy(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-max-pixels", "0", "-warm", "-1", "-timeout", "0s"}, &stdout, &stderr)
	assert.Equal(t, 2, code)
	for _, want := range []string{"-max-pixels 0: must be at least 1", "-warm -1: must not be negative", "-timeout 0s: must be positive", "no FILE given"} {
		assert.Contains(t, stderr.String(), "imageparser: "+want+"\n")
	}
}
