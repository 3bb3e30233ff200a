package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// requireCgroupEnv, set to 1, makes the cgroup tests fail where they
// would skip: .ci/run sets it for its root run when it found a writable
// cgroup v2 hierarchy, so that CI cannot lose them without notice.
const requireCgroupEnv = "SANDKIT_REQUIRE_CGROUP2"

// cgroup2Dir returns a fresh writable directory in a cgroup v2 hierarchy,
// or skips: only root (or a delegated user) can create one.
func cgroup2Dir(t *testing.T) string {
	skip := t.Skipf
	if os.Getenv(requireCgroupEnv) == "1" {
		skip = t.Fatalf
	}
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, field := range fields {
			if field == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				dir := filepath.Join(fields[4], fmt.Sprintf("sandkit-test-%d", os.Getpid()))
				if err := os.Mkdir(dir, 0o755); err != nil {
					skip("cgroup v2 at %s is not writable here: %v", fields[4], err)
				}
				t.Cleanup(func() { os.Remove(dir) })
				return dir
			}
		}
	}
	skip("no cgroup v2 hierarchy mounted")
	return ""
}

func TestRendererSpawnsIntoItsOwnCgroup(t *testing.T) {
	dir := cgroup2Dir(t)
	b := newBroker(t, strict(), func(c *broker.Config) { c.CgroupDir = dir })
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	assert.True(t, r.Layers().Active(policy.LayerCgroup), "%v", r.Layers())
	groups, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", r.PID()))
	require.NoError(t, err)
	assert.Contains(t, string(groups), "/"+filepath.Base(dir)+"/sandkit-", "renderer must run in a child group of the broker's directory")
	r.Close()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, e.IsDir() && strings.HasPrefix(e.Name(), "sandkit-"), "group %s left behind", e.Name())
	}
}
