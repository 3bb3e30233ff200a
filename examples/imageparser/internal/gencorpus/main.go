// Command gencorpus regenerates the imageparser test corpus: valid images of
// every supported format and hostile inputs crafted byte by byte. Every file
// is derived from fixed content, so reruns produce identical bytes (the WebP
// files depend on the installed cwebp version; if cwebp is missing they are
// left as they are). It also writes the FuzzThumbnail seed corpus.
//
// Run from examples/imageparser:
//
//	go run ./internal/gencorpus
//
// This is a development tool: unlike package thumb it runs outside the
// sandbox and may use files and processes freely.
package main

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

func main() {
	out := flag.String("out", "testdata", "corpus directory")
	fuzzDir := flag.String("fuzz", "thumb/testdata/fuzz/FuzzThumbnail", "FuzzThumbnail seed corpus directory (empty: skip)")
	maxSeed := flag.Int("maxseed", 16<<10, "largest corpus file copied into the fuzz seed corpus")
	flag.Parse()
	log.SetFlags(0)

	files := map[string][]byte{}
	add := func(name string, data []byte) {
		if _, dup := files[name]; dup {
			log.Fatalf("duplicate corpus name %s", name)
		}
		files[name] = data
	}

	// Valid images.
	pngRGBA := encPNG(gradientNRGBA(640, 480))
	add("png_640x480.png", pngRGBA)
	add("png_1x1.png", encPNG(gradientNRGBA(1, 1)))
	add("png_gray16_64x64.png", encPNG(gray16(64, 64)))
	add("png_disguised.jpg", encPNG(gradientNRGBA(120, 80))) // a PNG with a .jpg name
	jpeg640 := encJPEG(gradientRGBA(640, 480), 75)
	add("jpeg_640x480.jpg", jpeg640)
	add("jpeg_300x1000.jpg", encJPEG(gradientRGBA(300, 1000), 60))
	anim := animatedGIF(400, 300, 3)
	add("gif_anim_400x300_3frames.gif", anim)
	add("gif_partial_frame_200x100.gif", partialFrameGIF())
	add("bmp_101x67_24bit.bmp", encBMP(gradientRGBA(101, 67)))
	add("bmp_200x150_8bit.bmp", encBMP(palettedImage(200, 150)))
	add("tiff_500x375_deflate.tif", encTIFF(blocksRGBA(500, 375), tiff.Deflate))
	add("tiff_multi_ifd_64x48.tif", multiIFDTIFF())

	// Hostile inputs.
	add("empty.png", nil)
	add("random_4k.bin", random(4096))
	add("text_as.png", []byte("this is not an image\n"))
	add("png_truncated.png", pngRGBA[:len(pngRGBA)/2])
	add("png_truncated_header.png", pngRGBA[:30])
	add("png_bad_crc.png", badCRC(pngRGBA))
	add("png_header_100000x100000.png", pngHeaderOnly(100000, 100000))
	add("png_bomb_20000x20000.png", pngBomb(20000, 20000))
	add("png_lying_7000x7000.png", pngLying(7000, 7000))
	add("png_zero_width.png", pngHeaderOnly(0, 10))
	add("jpeg_truncated.jpg", jpeg640[:len(jpeg640)/2])
	add("jpeg_header_65535x65535.jpg", jpegHeaderOnly(65535, 65535))
	add("gif_truncated.gif", anim[:len(anim)*2/3])
	add("gif_screen_65535x65535.gif", gifHugeScreen())
	add("gif_2000_frames.gif", gifManyFrames(2000))
	add("gif_bad_block.gif", gifBadBlock())
	add("bmp_header_50000x50000.bmp", bmpHeaderOnly(50000, 50000, 24, 0))
	add("bmp_0x0.bmp", bmpHeaderOnly(0, 0, 24, 0))
	add("bmp_rle8.bmp", bmpHeaderOnly(16, 16, 8, 1))
	add("tiff_1000000x1000000.tif", tiffHeaderOnly(1000000, 1000000))
	add("tiff_4294967295x4294967295.tif", tiffHeaderOnly(0xffffffff, 0xffffffff))
	add("webp_canvas_16384x16384.webp", webpVP8X(16384, 16384, 0))
	add("webp_animated.webp", webpVP8X(10, 10, 0x02))

	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		write(filepath.Join(*out, name), files[name])
	}

	webpFiles(*out)

	if *fuzzDir != "" {
		writeSeeds(*out, *fuzzDir, *maxSeed)
	}
}

func write(path string, data []byte) {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%8d %s\n", len(data), path)
}

// --- content ---------------------------------------------------------------

// gradientNRGBA is a colour ramp whose alpha fades from opaque (left) to
// one-quarter (right), so that alpha handling is exercised.
func gradientNRGBA(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetNRGBA(x, y, color.NRGBA{
				R: uint8(255 * x / max(w, 1)),
				G: uint8(255 * y / max(h, 1)),
				B: uint8(128 + 127*(x+y)/max(w+h, 1)),
				A: uint8(255 - 191*x/max(w, 1)),
			})
		}
	}
	return m
}

func gradientRGBA(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetRGBA(x, y, color.RGBA{
				R: uint8(255 * x / w),
				G: uint8(255 * y / h),
				B: uint8((x/16 + y/16) % 2 * 200),
				A: 0xff,
			})
		}
	}
	return m
}

// blocksRGBA is a grid of flat 25x25 tiles in 64 colours: TIFF's deflate has
// no predictor here, so a smooth ramp would barely compress.
func blocksRGBA(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := x/25 + y/25*3
			m.SetRGBA(x, y, color.RGBA{R: uint8(i % 4 * 80), G: uint8(i / 4 % 4 * 80), B: uint8(i / 16 % 4 * 80), A: 0xff})
		}
	}
	return m
}

func gray16(w, h int) *image.Gray16 {
	m := image.NewGray16(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetGray16(x, y, color.Gray16{Y: uint16(65535 * (x + y) / (w + h - 2))})
		}
	}
	return m
}

func palettedImage(w, h int) *image.Paletted {
	m := image.NewPaletted(image.Rect(0, 0, w, h), palette.WebSafe)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetColorIndex(x, y, uint8((x/10+y/10*7)%len(palette.WebSafe)))
		}
	}
	return m
}

// random returns n bytes from a fixed-seed xorshift generator.
func random(n int) []byte {
	b := make([]byte, n)
	s := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		s ^= s << 13
		s ^= s >> 7
		s ^= s << 17
		b[i] = byte(s >> 32)
	}
	return b
}

// --- encoders --------------------------------------------------------------

func encPNG(m image.Image) []byte {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, m); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

func encJPEG(m image.Image, q int) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: q}); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

func encBMP(m image.Image) []byte {
	var buf bytes.Buffer
	if err := bmp.Encode(&buf, m); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

func encTIFF(m image.Image, c tiff.CompressionType) []byte {
	var buf bytes.Buffer
	if err := tiff.Encode(&buf, m, &tiff.Options{Compression: c}); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

// --- GIF -------------------------------------------------------------------

func animatedGIF(w, h, frames int) []byte {
	pal := color.Palette{
		color.RGBA{0, 0, 0, 0xff}, color.RGBA{0xff, 0, 0, 0xff},
		color.RGBA{0, 0xff, 0, 0xff}, color.RGBA{0, 0, 0xff, 0xff},
	}
	g := &gif.GIF{}
	for f := 0; f < frames; f++ {
		m := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				m.SetColorIndex(x, y, uint8(((x+f*20)/40+y/40)%4))
			}
		}
		g.Image = append(g.Image, m)
		g.Delay = append(g.Delay, 10)
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, g); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

// partialFrameGIF has a 200x100 logical screen whose only frame is a red
// 50x40 rectangle at (10,20): the rest of the canvas must come out
// transparent.
func partialFrameGIF() []byte {
	pal := color.Palette{color.RGBA{0xff, 0, 0, 0xff}, color.RGBA{0, 0, 0xff, 0xff}}
	m := image.NewPaletted(image.Rect(10, 20, 60, 60), pal)
	g := &gif.GIF{
		Image:  []*image.Paletted{m},
		Delay:  []int{0},
		Config: image.Config{ColorModel: pal, Width: 200, Height: 100},
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, g); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

// gifHeader is a GIF89a header and logical screen descriptor with a
// two-entry global colour table.
func gifHeader(w, h int) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, uint16(w))
	b = binary.LittleEndian.AppendUint16(b, uint16(h))
	b = append(b, 0x80, 0, 0)             // global table of 2 entries, bg 0, aspect 0
	b = append(b, 0, 0, 0, 255, 255, 255) // black, white
	return b
}

// gifFrame1x1 is one 1x1 image at (0,0): descriptor, LZW min code size 2,
// and the LZW stream clear, index 0, end.
func gifFrame1x1(b []byte) []byte {
	b = append(b, 0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0)
	return append(b, 0x02, 0x02, 0x44, 0x01, 0x00)
}

func gifHugeScreen() []byte {
	return append(gifFrame1x1(gifHeader(65535, 65535)), 0x3B)
}

func gifManyFrames(n int) []byte {
	b := gifHeader(1, 1)
	for i := 0; i < n; i++ {
		b = gifFrame1x1(b)
	}
	return append(b, 0x3B)
}

func gifBadBlock() []byte {
	return append(gifFrame1x1(gifHeader(1, 1)), 0x99, 0x3B)
}

// --- PNG -------------------------------------------------------------------

func pngChunk(b []byte, typ string, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	start := len(b)
	b = append(b, typ...)
	b = append(b, data...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

func ihdr(w, h int, depth, colorType byte) []byte {
	d := binary.BigEndian.AppendUint32(nil, uint32(w))
	d = binary.BigEndian.AppendUint32(d, uint32(h))
	return append(d, depth, colorType, 0, 0, 0)
}

func pngHeaderOnly(w, h int) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	b = pngChunk(b, "IHDR", ihdr(w, h, 8, 6))
	return pngChunk(b, "IEND", nil)
}

// pngBomb is a complete, valid w x h 1-bit grayscale PNG of zeros: every
// row is a filter byte and (w+7)/8 zero bytes, which zlib squeezes ~1000:1.
func pngBomb(w, h int) []byte {
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+(w+7)/8)
	for y := 0; y < h; y++ {
		if _, err := zw.Write(row); err != nil {
			log.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}
	b := []byte("\x89PNG\r\n\x1a\n")
	b = pngChunk(b, "IHDR", ihdr(w, h, 1, 0))
	b = pngChunk(b, "IDAT", z.Bytes())
	return pngChunk(b, "IEND", nil)
}

// pngLying declares a w x h 8-bit grayscale image within the default budget
// but carries pixel data for only ten rows.
func pngLying(w, h int) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	if _, err := zw.Write(make([]byte, 10*(1+w))); err != nil {
		log.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}
	b := []byte("\x89PNG\r\n\x1a\n")
	b = pngChunk(b, "IHDR", ihdr(w, h, 8, 0))
	b = pngChunk(b, "IDAT", z.Bytes())
	return pngChunk(b, "IEND", nil)
}

// badCRC flips one bit of the IHDR checksum.
func badCRC(p []byte) []byte {
	b := bytes.Clone(p)
	b[8+8+13+3] ^= 1 // signature, IHDR length+type, IHDR data, last CRC byte
	return b
}

// --- JPEG ------------------------------------------------------------------

// jpegHeaderOnly is SOI, a JFIF APP0 segment and a baseline SOF0 for a
// 3-component w x h image, then EOI: enough for DecodeConfig, nothing else.
func jpegHeaderOnly(w, h int) []byte {
	b := []byte{0xFF, 0xD8}
	b = append(b, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0)
	b = append(b, 0xFF, 0xC0, 0, 17, 8)
	b = binary.BigEndian.AppendUint16(b, uint16(h))
	b = binary.BigEndian.AppendUint16(b, uint16(w))
	b = append(b, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1)
	return append(b, 0xFF, 0xD9)
}

// --- BMP -------------------------------------------------------------------

// bmpHeaderOnly is a BITMAPFILEHEADER + BITMAPINFOHEADER (and a 256-entry
// palette for 8 bpp) with no pixel data.
func bmpHeaderOnly(w, h int, bpp uint16, compression uint32) []byte {
	palBytes := 0
	if bpp == 8 {
		palBytes = 256 * 4
	}
	off := uint32(14 + 40 + palBytes)
	b := []byte("BM")
	b = binary.LittleEndian.AppendUint32(b, off)
	b = append(b, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, off)
	b = binary.LittleEndian.AppendUint32(b, 40)
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(w)))
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(h)))
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, bpp)
	b = binary.LittleEndian.AppendUint32(b, compression)
	b = append(b, make([]byte, 20)...) // image size, resolution, colours used/important
	return append(b, make([]byte, palBytes)...)
}

// --- TIFF ------------------------------------------------------------------

type ifdEntry struct {
	tag, typ uint16
	count    uint32
	value    uint32
}

// appendIFD appends a little-endian IFD (entries sorted by tag, values
// inline) with a zero next-IFD offset.
func appendIFD(b []byte, entries []ifdEntry) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(entries)))
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.typ)
		b = binary.LittleEndian.AppendUint32(b, e.count)
		b = binary.LittleEndian.AppendUint32(b, e.value)
	}
	return binary.LittleEndian.AppendUint32(b, 0)
}

const (
	tShort = 3
	tLong  = 4
)

// grayIFD describes an uncompressed 8-bit grayscale image in one strip.
func grayIFD(w, h, stripOffset, stripBytes uint32) []ifdEntry {
	return []ifdEntry{
		{256, tLong, 1, w},           // ImageWidth
		{257, tLong, 1, h},           // ImageLength
		{258, tShort, 1, 8},          // BitsPerSample
		{259, tShort, 1, 1},          // Compression: none
		{262, tShort, 1, 1},          // PhotometricInterpretation: BlackIsZero
		{273, tLong, 1, stripOffset}, // StripOffsets
		{278, tLong, 1, h},           // RowsPerStrip
		{279, tLong, 1, stripBytes},  // StripByteCounts
	}
}

func tiffHeaderOnly(w, h uint32) []byte {
	b := append([]byte("II*\x00"), 8, 0, 0, 0)
	return appendIFD(b, grayIFD(w, h, 0, 0))
}

// multiIFDTIFF is a valid 64x48 grayscale TIFF whose next-IFD pointer leads
// to a second IFD claiming 1000000x1000000. Decoders read the first IFD only,
// so the file must decode as 64x48.
func multiIFDTIFF() []byte {
	const w, h = 64, 48
	b := append([]byte("II*\x00"), 8, 0, 0, 0)
	first := len(b)
	pixOff := uint32(first + 2 + 8*12 + 4)
	b = appendIFD(b, grayIFD(w, h, pixOff, w*h))
	for i := 0; i < w*h; i++ {
		b = append(b, byte(i*7))
	}
	second := uint32(len(b))
	binary.LittleEndian.PutUint32(b[first+2+8*12:], second)
	return appendIFD(b, grayIFD(1000000, 1000000, pixOff, w*h))
}

// --- WebP ------------------------------------------------------------------

// webpVP8X is a RIFF/WEBP file with only a VP8X chunk (canvas w x h, the
// given flags) and, when the animation flag is set, an empty ANIM chunk.
func webpVP8X(w, h int, flags byte) []byte {
	var body []byte
	body = append(body, "WEBP"...)
	body = append(body, "VP8X"...)
	body = binary.LittleEndian.AppendUint32(body, 10)
	body = append(body, flags, 0, 0, 0)
	body = append(body, byte(w-1), byte((w-1)>>8), byte((w-1)>>16))
	body = append(body, byte(h-1), byte((h-1)>>8), byte((h-1)>>16))
	if flags&0x02 != 0 {
		body = append(body, "ANIM"...)
		body = binary.LittleEndian.AppendUint32(body, 6)
		body = append(body, 0, 0, 0, 0, 0, 0)
	}
	b := append([]byte("RIFF"), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(body)))
	return append(b, body...)
}

// webpFiles encodes PNG sources with cwebp (Debian package "webp"): lossy,
// lossless, and lossy with alpha. Without cwebp the committed files stay.
func webpFiles(out string) {
	cwebp, err := exec.LookPath("cwebp")
	if err != nil {
		log.Printf("cwebp not found (apt-get install webp): keeping the committed .webp files")
		return
	}
	tmp, err := os.MkdirTemp("", "gencorpus")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	jobs := []struct {
		name string
		src  image.Image
		args []string
	}{
		{"webp_lossy_640x480.webp", gradientRGBA(640, 480), []string{"-q", "50", "-m", "6"}},
		{"webp_lossless_300x1000.webp", gradientRGBA(300, 1000), []string{"-lossless", "-z", "9"}},
		{"webp_alpha_200x150.webp", gradientNRGBA(200, 150), []string{"-q", "60", "-alpha_q", "100"}},
	}
	for _, j := range jobs {
		src := filepath.Join(tmp, j.name+".png")
		if err := os.WriteFile(src, encPNG(j.src), 0o644); err != nil {
			log.Fatal(err)
		}
		dst := filepath.Join(out, j.name)
		args := append(append([]string{"-quiet", "-metadata", "none"}, j.args...), src, "-o", dst)
		if outp, err := exec.Command(cwebp, args...).CombinedOutput(); err != nil {
			log.Fatalf("cwebp %v: %v\n%s", args, err, outp)
		}
		st, err := os.Stat(dst)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%8d %s\n", st.Size(), dst)
	}
}

// writeSeeds copies every corpus file of at most maxSize bytes into the
// FuzzThumbnail seed corpus, in the "go test fuzz v1" format.
func writeSeeds(corpus, dir string, maxSize int) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	ents, err := os.ReadDir(corpus)
	if err != nil {
		log.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() || e.Name() == "README.md" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(corpus, e.Name()))
		if err != nil {
			log.Fatal(err)
		}
		if len(data) > maxSize {
			continue
		}
		seed := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+e.Name()), []byte(seed), 0o644); err != nil {
			log.Fatal(err)
		}
		n++
	}
	fmt.Printf("%d fuzz seeds in %s\n", n, dir)
}
