package client

import (
	"testing"
	"time"
)

// A lease end the server answered is read on the local clock through the
// answer's Date header, so a skew between the clocks moves nothing.
func TestAnswerClockIgnoresSkew(t *testing.T) {
	local := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, skew := range []time.Duration{0, time.Hour, -time.Hour} {
		server := local.Add(skew)
		c := answerClock{server: server, local: local}
		if got, want := c.localTime(server.Add(30*time.Second)), local.Add(30*time.Second); !got.Equal(want) {
			t.Errorf("skew %s: a lease ending 30s after the answer ends at %s locally, want %s", skew, got, want)
		}
	}
	// Without a Date header the server's time is taken as it is.
	ends := local.Add(time.Minute)
	if got := (answerClock{local: local}).localTime(ends); !got.Equal(ends) {
		t.Errorf("without a Date: %s, want %s", got, ends)
	}
}
