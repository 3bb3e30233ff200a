package lockdownplan

import (
	"testing"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"
)

// The rights of each ABI are those go-landlock, which follows the
// kernel's headers, gives its configuration of that ABI, and the set
// names are go-landlock's too.
func TestRightsMatchGoLandlock(t *testing.T) {
	configs := []landlock.Config{{}, landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5,
		landlock.V6, landlock.V7, landlock.V8, landlock.V9, landlock.V10, landlock.V11}
	require.Len(t, configs, NewestABI+1, "go-landlock's ABIs")
	for kernel := range NewestABI + 4 {
		abi, r := LandlockRights(kernel)
		assert.Equal(t, min(kernel, NewestABI), abi)
		c := configs[abi]
		assert.Equal(t, Rights{FS: uint64(c.HandledAccessFS), Net: uint64(c.HandledAccessNet), Scoped: uint64(c.Scoped)}, r, "ABI %d", abi)
	}
	for set := range uint64(1 << 5) {
		assert.Equal(t, landlock.AccessNetSet(set).String(), netRightNames(set))
	}
	for set := range uint64(1 << 3) {
		assert.Equal(t, landlock.ScopedSet(set).String(), scopeNames(set))
	}
}

// The kernel's ABI as this package reads it is go-landlock's.
func TestLandlockABIVersion(t *testing.T) {
	want, wantErr := llsys.LandlockGetABIVersion()
	got, err := LandlockABIVersion()
	assert.Equal(t, wantErr, err)
	if wantErr == nil {
		assert.Equal(t, want, got)
	}
}

// The applied ABI is the kernel's up to the newest go-landlock knows, and
// the layer's detail names the applied one (and the kernel's when they
// differ) and what it handles. UDP is handled from ABI 10 on.
func TestLandlockAppliedABI(t *testing.T) {
	tests := []struct {
		kernel  int
		abi     int
		fs, net string
	}{
		{kernel: 4, abi: 4, fs: "ABI 4: 15 filesystem rights", net: "ABI 4: {bind_tcp,connect_tcp}; no UDP before ABI 10"},
		{kernel: 7, abi: 7, fs: "ABI 7: 16 filesystem rights", net: "ABI 7: {bind_tcp,connect_tcp}; no UDP before ABI 10"},
		{kernel: 9, abi: 9, fs: "ABI 9: 17 filesystem rights", net: "ABI 9: {bind_tcp,connect_tcp}; no UDP before ABI 10"},
		{kernel: 10, abi: 10, fs: "ABI 10: 17 filesystem rights", net: "ABI 10: {bind_tcp,connect_tcp,bind_udp,connect_send_udp}"},
		{kernel: 14, abi: 11, fs: "ABI 11 (the kernel has 14): 17 filesystem rights", net: "ABI 11 (the kernel has 14): {bind_tcp,connect_tcp,bind_udp,connect_send_udp}"},
	}
	for _, tt := range tests {
		abi, cfg := LandlockRights(tt.kernel)
		assert.Equal(t, tt.abi, abi, "kernel ABI %d", tt.kernel)
		assert.Equal(t, tt.fs, LandlockDetail(policy.LayerLandlockFS, abi, tt.kernel, cfg))
		assert.Equal(t, tt.net, LandlockDetail(policy.LayerLandlockNet, abi, tt.kernel, cfg))
	}
	abi, cfg := LandlockRights(7)
	assert.Equal(t, "ABI 7: {abstract_unix_socket,signal}", LandlockDetail(policy.LayerLandlockScope, abi, 7, cfg))
}
