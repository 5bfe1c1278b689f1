package actors

import (
	"os"
	"testing"

	"github.com/agent-server/agent-server/core/pgstore/pgtest"
)

// TestMain removes the PostgreSQL server the benchmarks may have started.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
