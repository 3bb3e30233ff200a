package lockdownplan

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sandkit/sandkit/policy"
)

func TestLandlockConfigCoversEveryABI(t *testing.T) {
	_, prev := LandlockConfig(1)
	for kernel := 2; kernel <= 11; kernel++ {
		abi, c := LandlockConfig(kernel)
		// go-landlock v0.11.2 knows every ABI up to 11: none is capped.
		assert.Equal(t, kernel, abi)
		assert.GreaterOrEqual(t, uint64(c.HandledAccessFS), uint64(prev.HandledAccessFS), "ABI %d", abi)
		assert.GreaterOrEqual(t, uint64(c.HandledAccessNet), uint64(prev.HandledAccessNet), "ABI %d", abi)
		prev = c
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
		abi, cfg := LandlockConfig(tt.kernel)
		assert.Equal(t, tt.abi, abi, "kernel ABI %d", tt.kernel)
		assert.Equal(t, tt.fs, LandlockDetail(policy.LayerLandlockFS, abi, tt.kernel, cfg))
		assert.Equal(t, tt.net, LandlockDetail(policy.LayerLandlockNet, abi, tt.kernel, cfg))
	}
	abi, cfg := LandlockConfig(7)
	assert.Equal(t, "ABI 7: {abstract_unix_socket,signal}", LandlockDetail(policy.LayerLandlockScope, abi, 7, cfg))
}
