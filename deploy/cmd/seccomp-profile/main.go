// Command seccomp-profile writes deploy/seccomp.json and the generated
// section of docs/deploying-containers.md from the document viewer's
// renderer policy (run by `make seccomp-profile`; never edit either by
// hand: TestGeneratedFilesUpToDate fails on any difference).
//
//	go run ./cmd/seccomp-profile -write   (from deploy/)
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sandkit/sandkit/deploy/generated"
)

func main() {
	write := flag.Bool("write", false, "write the files (default: report which differ)")
	root := flag.String("root", "..", "the repository's root")
	flag.Parse()
	stale, err := generated.Sync(*root, *write)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seccomp-profile:", err)
		os.Exit(1)
	}
	for _, f := range stale {
		if *write {
			fmt.Println("wrote", f)
		} else {
			fmt.Println("differs:", f)
		}
	}
	if !*write && len(stale) > 0 {
		os.Exit(1)
	}
}
