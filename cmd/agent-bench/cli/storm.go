package cli

import (
	"flag"

	"github.com/agent-server/agent-server/bench/load"
)

// stormFlags defines, on fs, the flags of the reconnect storm that both
// reconnect-storm (agent-bench) and cluster-storm (agent-bench cluster)
// run, bound to p's fields, whose values are the defaults: one definition
// and one help text for both commands.
func stormFlags(fs *flag.FlagSet, p *load.StormParams) {
	fs.IntVar(&p.N, "storm-n", p.N, "storm clients, a distinct JWT each (cluster-storm spreads them over the nodes)")
	fs.IntVar(&p.PerConversation, "storm-per-conv", p.PerConversation, "storm clients per conversation")
	fs.Float64Var(&p.Rate, "storm-rate", p.Rate, "storm events per second posted to each conversation (cluster-storm: over REST)")
	fs.DurationVar(&p.Jitter, "storm-jitter", p.Jitter, "storm: each dropped client reconnects after a uniform random delay in [0, this]")
	fs.DurationVar(&p.Hold, "storm-hold", p.Hold, "storm: time from the last first connect to the drop (cluster-storm: the single node's; the cluster's drop is a node's death); more than auth.cache.allow_ttl (10s) keeps the cache out")
}
