package server

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"
)

// SetGCPercent applies server.gc_percent (0: Go's default of 100) to the
// garbage collector, unless the GOGC environment variable (getenv reads
// it) holds a value Go takes, a number or "off", which wins. It returns
// the percent in force (-1: off) and where it comes from, for the
// startup log.
func SetGCPercent(percent int, getenv func(string) string) (int, string) {
	switch env := getenv("GOGC"); {
	case env == "off":
		return -1, "GOGC"
	case validPercent(env):
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int(s[0].Value.Uint64()), "GOGC"
	}
	if percent <= 0 {
		percent = 100
	}
	debug.SetGCPercent(percent)
	return percent, "server.gc_percent"
}

// validPercent reports whether s is a GOGC percent Go takes.
func validPercent(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// minRelease is how much memory must have come back from a burst, over
// what the process held after its last release, for a release to be worth
// a full collection.
const minRelease = 4 << 20

// ReleaseMemory returns the memory a burst of connections left behind to
// the OS, until ctx ends. Go keeps freed heap and garbage mapped until its
// next collection and scavenges it slowly, so after ten thousand sockets
// come and go the RSS stays near its peak for minutes. Once the server has
// had no request and no frame for server.release_memory_after, and the
// memory it holds grew by minRelease since the last release, it runs
// debug.FreeOSMemory: once per quiet spell, never under load.
func (s *Server) ReleaseMemory(ctx context.Context) {
	quiet := s.cfg.Server.ReleaseMemoryAfter
	if quiet <= 0 {
		return
	}
	tick := time.NewTicker(max(quiet/4, 100*time.Millisecond))
	defer tick.Stop()
	var r releaser
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			active := s.lastActive.Load()
			held := heldBytes()
			if !r.due(now, quiet, active, held) {
				continue
			}
			debug.FreeOSMemory()
			after := heldBytes()
			r.released(active, after)
			s.log.Debug("returned memory to the OS", "held_before", held, "held_after", after)
		}
	}
}

// releaser decides when ReleaseMemory releases.
type releaser struct {
	spell int64  // lastActive when it last released: that quiet spell is done
	floor uint64 // bytes held right after the last release
}

// due reports whether to release at now, given when the server was last
// active (unix nanoseconds) and the bytes the process holds.
func (r *releaser) due(now time.Time, quiet time.Duration, active int64, held uint64) bool {
	return now.Sub(time.Unix(0, active)) >= quiet && active != r.spell && held >= r.floor+minRelease
}

// released records a release made in the quiet spell that began at active.
func (r *releaser) released(active int64, held uint64) { r.spell, r.floor = active, held }

// heldBytes is the memory the Go runtime holds from the OS and has not
// returned: what it mapped, less what it released.
func heldBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	total, released := s[0].Value.Uint64(), s[1].Value.Uint64()
	if released > total {
		return 0
	}
	return total - released
}
