package broker

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// The violation monitor's decisions, for every outcome of its poll and of
// its receive. The one that matters most: a notification withdrawn between
// the two (ENOENT) keeps the monitor watching.
func TestMonitorSteps(t *testing.T) {
	polls := []struct {
		name    string
		n       int
		revents int16
		err     error
		want    monitorStep
	}{
		{"nothing pending", 0, 0, nil, stepWait},
		{"interrupted", -1, 0, unix.EINTR, stepWait},
		{"notification", 1, unix.POLLIN, nil, stepRead},
		{"notification and a sent one", 1, unix.POLLIN | unix.POLLOUT, nil, stepRead},
		{"every task gone", 1, unix.POLLHUP, nil, stepHangUp},
		{"invalid descriptor", 1, unix.POLLNVAL, nil, stepBroken},
		{"error event", 1, unix.POLLERR, nil, stepBroken},
		{"poll failed", -1, 0, unix.EBADF, stepBroken},
	}
	for _, tt := range polls {
		t.Run("poll/"+tt.name, func(t *testing.T) {
			got, err := afterPoll(tt.n, tt.revents, tt.err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want == stepBroken, err != nil, "error %v", err)
		})
	}
	receives := []struct {
		name string
		err  error
		want monitorStep
	}{
		{"read", nil, stepReport},
		{"withdrawn", unix.ENOENT, stepWait},
		{"listener failed", unix.EBADF, stepBroken},
		{"not a listener", unix.EINVAL, stepBroken},
	}
	for _, tt := range receives {
		t.Run("receive/"+tt.name, func(t *testing.T) {
			got, err := afterReceive(tt.err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want == stepBroken, err != nil, "error %v", err)
		})
	}
}
