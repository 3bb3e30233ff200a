package parser

import (
	"context"
	"fmt"
	"io"

	"github.com/sandkit/sandkit/examples/imageparser/verify"
)

// progressOver is the number of files above which Run reports progress:
// for a handful of files the result lines are progress enough.
const progressOver = 10

// Run thumbnails paths, at most Options.Concurrency at a time, and writes
// one line per path to out, in the order of paths whatever the order of
// completion: verify.OKLine on success, verify.FailLine with the reason
// otherwise. A failing file never stops the others. When there are more
// than ten files, progress ("[12/340]") goes to progress, which may be
// nil. Run returns the number of files that failed, and the first error
// writing to out, if any.
func (p *Parser) Run(ctx context.Context, paths []string, out, progress io.Writer) (failed int, err error) {
	lines := make([]chan string, len(paths))
	for i := range lines {
		lines[i] = make(chan string, 1)
	}
	// ok[i] is written by file i's goroutine before it sends its line.
	ok := make([]bool, len(paths))
	go func() {
		slots := make(chan struct{}, p.concurrency)
		for i, path := range paths {
			slots <- struct{}{}
			go func() {
				defer func() { <-slots }()
				res, err := p.Thumbnail(ctx, i, path)
				if err != nil {
					lines[i] <- verify.FailLine(path, err)
					return
				}
				ok[i] = true
				lines[i] <- res.Line()
			}()
		}
	}()
	for i := range paths {
		line := <-lines[i]
		if !ok[i] {
			failed++
		}
		if _, werr := fmt.Fprintln(out, line); werr != nil && err == nil {
			err = fmt.Errorf("parser: writing results: %w", werr)
		}
		if progress != nil && len(paths) > progressOver {
			fmt.Fprintf(progress, "[%d/%d]\n", i+1, len(paths))
		}
	}
	return failed, err
}
