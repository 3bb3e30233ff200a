package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sandkit/sandkit/policy"
)

// cgroup is the cgroup v2 child group of one renderer.
type cgroup struct {
	path string
	dir  *os.File // open only until the renderer is spawned into it
}

// newCgroup creates a child group of parent with the given limits. The
// renderer is spawned straight into it (SysProcAttr.UseCgroupFD), so it
// never runs a single instruction outside its limits.
func newCgroup(parent, name string, l policy.CgroupLimits) (*cgroup, error) {
	path := filepath.Join(parent, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	cg := &cgroup{path: path}
	write := func(file, value string) error {
		if err := os.WriteFile(filepath.Join(path, file), []byte(value), 0); err != nil {
			return fmt.Errorf("cgroup %s: %w", file, err)
		}
		return nil
	}
	var err error
	if l.MemoryMax > 0 {
		err = write("memory.max", strconv.FormatUint(l.MemoryMax, 10))
		if err == nil {
			err = write("memory.swap.max", "0")
			if os.IsNotExist(err) {
				err = nil // no swap accounting: nothing to limit
			}
		}
	}
	if err == nil && l.PidsMax > 0 {
		err = write("pids.max", strconv.FormatUint(l.PidsMax, 10))
	}
	if err == nil && l.CPUPercent > 0 {
		const period = 100000
		err = write("cpu.max", fmt.Sprintf("%d %d", l.CPUPercent*period/100, period))
	}
	if err == nil {
		cg.dir, err = os.Open(path)
	}
	if err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

// oomKilled reports whether the group's OOM killer fired.
func (c *cgroup) oomKilled() bool {
	b, err := os.ReadFile(filepath.Join(c.path, "memory.events"))
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var n uint64
		if _, err := fmt.Sscanf(sc.Text(), "oom_kill %d", &n); err == nil && n > 0 {
			return true
		}
	}
	return false
}

// remove deletes the group; the kernel refuses while a process is in it,
// which can last a moment after the reap.
func (c *cgroup) remove() {
	for i := 0; i < 50; i++ {
		if err := os.Remove(c.path); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pidsMaxHit reports whether the kernel refused the group a task because
// of pids.max: the "max" counter of pids.events.
func (c *cgroup) pidsMaxHit() bool {
	b, err := os.ReadFile(filepath.Join(c.path, "pids.events"))
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var n uint64
		if _, err := fmt.Sscanf(sc.Text(), "max %d", &n); err == nil && n > 0 {
			return true
		}
	}
	return false
}
