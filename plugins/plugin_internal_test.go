package plugins

import (
	"runtime/debug"
	"testing"
)

// A plugin process collects at pluginGCPercent, unless GOGC is set.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, tt := range []struct {
		name string
		env  string
		want int
	}{
		{"GOGC unset", "", pluginGCPercent},
		{"GOGC set", "50", 50},
	} {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(50) // as GOGC=50 would have at start
			setGCPercent(func(string) string { return tt.env })
			if got := debug.SetGCPercent(100); got != tt.want {
				t.Errorf("GC percent = %d, want %d", got, tt.want)
			}
		})
	}
}
