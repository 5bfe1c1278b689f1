package actors

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/k8s"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	labstack "github.com/labstack/echo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/agent-server/agent-server/actors/clusterpb"
	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/core/config"
)

// This file owns placement in cluster mode: protoactor's cluster with the
// disthash identity lookup, the membership provider cluster.provider
// names, the conversation kind, the hardened remote between nodes, knowing
// when this node has joined, and leaving when the others dropped it.
// Remote delivery (relays) is in relay.go, fencing in fencing.go.

// conversationKind is the cluster kind of conversation actors.
const conversationKind = "conversation"

// membershipActor is the name of each node's actor that answers IsMember.
const membershipActor = "agent-server-membership"

// Timeouts of cluster calls.
const (
	// callAttempt bounds one attempt of a call to a conversation's
	// activation; a call retries within its own deadline.
	callAttempt = 3 * time.Second
	// startTimeout bounds protoactor's StartMember, which can hang (etcd).
	startTimeout = 30 * time.Second
)

// ErrNotJoined is a cluster call made before this node joined the cluster
// (or after it left).
var ErrNotJoined = errors.New("this node has not joined the cluster")

// Member is a cluster member as this node sees it.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// placement is cluster mode's handle on protoactor's cluster.
type placement struct {
	cfg     config.Cluster
	cluster *cluster.Cluster
	log     *slog.Logger
	self    string // this node's remote address
	id      string // this node's member ID as the provider names it

	joined   chan struct{} // closed once this node is in its own topology
	joinOnce sync.Once
	left     chan struct{} // closed when this node must leave (leave says why)
	leftOnce sync.Once
	leftWhy  atomic.Pointer[string]
	members  atomic.Pointer[[]Member]
	absent   atomic.Int64 // unix nanos since when this node is missing from its own topology, 0 if present
	owned    atomic.Int64 // conversation activations running on this node

	echo *labstack.Echo // the static provider's membership endpoint, nil otherwise
	stop func()         // stops the prober
}

// startPlacement starts this node as a cluster member. It returns once
// protoactor's member is running, before the node has joined (Ready tells);
// it refuses to start rather than run half configured.
func startPlacement(sys *actor.ActorSystem, cfg config.Cluster, props *actor.Props, log *slog.Logger) (p *placement, err error) {
	p = &placement{cfg: cfg, log: log, joined: make(chan struct{}), left: make(chan struct{})}
	p.members.Store(&[]Member{})
	rc, err := remoteConfig(cfg)
	if err != nil {
		return nil, err
	}
	provider, err := p.provider(cfg)
	if err != nil {
		return nil, err
	}
	cc := cluster.Configure(cfg.Name, provider, disthash.New(), rc,
		cluster.WithKinds(cluster.NewKind(conversationKind, props)),
		cluster.WithHeartbeatExpiration(cfg.HeartbeatExpiration),
		cluster.WithRequestTimeout(callAttempt),
		cluster.WithRequestLog(false))
	p.cluster = cluster.New(sys, cc)
	// Topology events come only on the event stream; subscribe before
	// StartMember, which publishes the first one.
	sys.EventStream.Subscribe(func(ev any) {
		if t, ok := ev.(*cluster.ClusterTopology); ok {
			p.topology(sys, t)
		}
	})
	if err := p.startMember(); err != nil {
		if p.echo != nil {
			_ = p.echo.Close()
		}
		return nil, err
	}
	p.self = sys.Address()
	if _, err := sys.Root.SpawnNamed(actor.PropsFromFunc(p.answerIsMember), membershipActor); err != nil {
		return nil, fmt.Errorf("cluster: spawn %s: %w", membershipActor, err)
	}
	p.stop = p.probe(sys)
	return p, nil
}

// startMember runs protoactor's StartMember, which panics on errors (a
// busy port) and can block for good (etcd down): both become errors.
func (p *placement) startMember() error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("cluster: start member: %v", r)
			}
		}()
		p.cluster.StartMember()
		done <- nil
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(startTimeout):
		return fmt.Errorf("cluster: start member: not started after %s (is the membership provider reachable?)", startTimeout)
	}
}

// topology takes a topology event. It runs on the provider's goroutine,
// under protoactor's member-list lock: it copies and never blocks.
func (p *placement) topology(sys *actor.ActorSystem, t *cluster.ClusterTopology) {
	ms := make([]Member, 0, len(t.Members))
	in := false
	for _, m := range t.Members {
		ms = append(ms, Member{ID: m.Id, Address: m.Address()})
		if m.Address() == sys.Address() {
			in = true
			p.id = m.Id
		}
	}
	p.members.Store(&ms)
	switch {
	case in:
		p.absent.Store(0)
		p.joinOnce.Do(func() {
			p.log.Info("cluster: joined", "address", sys.Address(), "members", len(ms))
			close(p.joined)
		})
	case p.hasJoined():
		p.absent.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (p *placement) hasJoined() bool {
	select {
	case <-p.joined:
		return true
	default:
		return false
	}
}

// Ready reports nil once this node is in its own topology and has not had
// to leave.
func (p *placement) Ready(context.Context) error {
	select {
	case <-p.left:
		return fmt.Errorf("cluster: this node is leaving: %s", *p.leftWhy.Load())
	default:
	}
	if !p.hasJoined() {
		return errors.New("cluster: not joined yet")
	}
	if since := p.absent.Load(); since != 0 {
		return fmt.Errorf("cluster: this node is missing from its own view since %s", time.Unix(0, since).UTC().Format(time.RFC3339))
	}
	return nil
}

// leave records that this node must leave the cluster and restart as a new
// member, once.
func (p *placement) leave(why string) {
	p.leftOnce.Do(func() {
		p.leftWhy.Store(&why)
		p.log.Error("cluster: this node must leave and restart as a new member", "why", why)
		close(p.left)
	})
}

// probe asks, every quarter of heartbeat_expiration, each peer this node
// sees whether it sees this node. protoactor never lets a member that was
// dropped back in: a node that was paused or cut off for longer than the
// heartbeat comes back to peers that no longer count it, and its
// activations would compete with theirs (fencing keeps the log right, not
// the service). So it leaves when a peer says no twice in a row, when this
// process did not run for longer than heartbeat_expiration (SIGSTOP, a
// frozen VM), or when this node has been missing from its own view for
// heartbeat_expiration (etcd losing its lease). Leaving means the caller
// closes its sockets with 1012 and exits, and its supervisor starts a new
// member.
func (p *placement) probe(sys *actor.ActorSystem) (stop func()) {
	every := max(p.cfg.HeartbeatExpiration/4, 250*time.Millisecond)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		noes := map[string]int{}
		for {
			waiting := time.Now()
			select {
			case <-done:
				return
			case <-tick.C:
			}
			// Waiting longer than a tick is time this process did not run.
			// Past the heartbeat, the others have dropped it, and it has
			// dropped them: its view is a cluster of one, and its
			// connections to them are refused, so no probe could tell.
			if gap := time.Since(waiting); gap > p.cfg.HeartbeatExpiration && p.hasJoined() {
				p.leave(fmt.Sprintf("this process did not run for %s (paused, frozen or starved), longer than cluster.heartbeat_expiration (%s): the other members have dropped it", gap.Round(time.Millisecond), p.cfg.HeartbeatExpiration))
				return
			}
			if !p.hasJoined() {
				continue
			}
			if since := p.absent.Load(); since != 0 && time.Since(time.Unix(0, since)) > p.cfg.HeartbeatExpiration {
				p.leave(fmt.Sprintf("missing from its own view for more than cluster.heartbeat_expiration (%s)", p.cfg.HeartbeatExpiration))
				return
			}
			for _, m := range *p.members.Load() {
				if m.Address == p.self {
					continue
				}
				res, err := sys.Root.RequestFuture(actor.NewPID(m.Address, membershipActor), &clusterpb.IsMember{MemberId: p.id}, every).Result()
				r, ok := res.(*clusterpb.IsMemberResult)
				switch {
				case err != nil || !ok:
					continue // unreachable: the provider decides about it
				case r.Member:
					delete(noes, m.Address)
				default:
					if noes[m.Address]++; noes[m.Address] >= 2 {
						p.leave(fmt.Sprintf("member %s no longer counts this node as a member (it was dropped, e.g. paused past cluster.heartbeat_expiration)", m.Address))
						return
					}
				}
			}
		}
	}()
	return func() { close(done) }
}

// answerIsMember is the membership actor: it answers IsMember from this
// node's view.
func (p *placement) answerIsMember(ctx actor.Context) {
	if m, ok := ctx.Message().(*clusterpb.IsMember); ok {
		ctx.Respond(&clusterpb.IsMemberResult{Member: p.cluster.MemberList.ContainsMemberID(m.MemberId)})
	}
}

// Members returns the members this node sees.
func (p *placement) Members() []Member { return *p.members.Load() }

// call sends a request to conversationID's activation, wherever it lives,
// activating it if needed, and returns its answer. protoactor's own
// cluster.Request retries with nanosecond backoff and never after a
// timeout; this retries dead letters and timeouts with real backoff until
// ctx ends. msg renders the request for each attempt (retry is false for
// the first only), so that an append can say it may be a retry; callers
// make requests safe to repeat (appends carry a key).
func (p *placement) call(ctx context.Context, conversationID string, msg func(retry bool) proto.Message) (any, error) {
	return p.callEach(ctx, conversationID, callAttempt, msg)
}

// callEach is call with each attempt bounded by each: a request the
// owner answers only after a wait of its own (a run waiting for a runtime,
// a question to the runtime) must not be sent again while it waits.
func (p *placement) callEach(ctx context.Context, conversationID string, each time.Duration, msg func(retry bool) proto.Message) (any, error) {
	if !p.hasJoined() {
		return nil, fmt.Errorf("%w: %w", core.ErrUnavailable, ErrNotJoined)
	}
	wait := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		pid := p.cluster.Get(conversationID, conversationKind) // activates if needed
		if pid != nil {
			d := each
			if dl, ok := ctx.Deadline(); ok {
				d = min(d, time.Until(dl))
			}
			res, err := p.cluster.ActorSystem.Root.RequestFuture(pid, msg(attempt > 0), d).Result()
			switch {
			case err == nil && res != nil:
				if fenced(res) {
					break // that activation lost the conversation: ask the one that has it
				}
				return res, nil
			case err == nil, errors.Is(err, actor.ErrTimeout), errors.Is(err, actor.ErrDeadLetter),
				errors.Is(err, remote.ErrTimeout), errors.Is(err, remote.ErrDeadLetter):
			default:
				return nil, fmt.Errorf("cluster call to conversation %s: %w", conversationID, err)
			}
			p.cluster.PidCache.Remove(conversationID, conversationKind)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster call to conversation %s: %w: %w", conversationID, core.ErrUnavailable, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// fenced reports whether an activation answered that it lost its
// conversation (fencing.go).
func fenced(res any) bool {
	r, ok := res.(*clusterpb.Result)
	return ok && r.Error != nil && r.Error.Code == errFenced
}

// same is msg for every attempt.
func same(msg proto.Message) func(bool) proto.Message { return func(bool) proto.Message { return msg } }

// shutdownBound bounds a graceful leave: protoactor's takes 2 s by a fixed
// sleep, more while it redials a peer that went away.
const shutdownBound = 6 * time.Second

// shutdown leaves the cluster gracefully: the activations here stop (their
// relays attach again elsewhere) and the provider deregisters. It gives up
// waiting after shutdownBound: the process is leaving anyway.
func (p *placement) shutdown() {
	if p.stop != nil {
		p.stop()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.cluster.Shutdown(true)
	}()
	select {
	case <-done:
	case <-time.After(shutdownBound):
		p.log.Warn("cluster: leaving took longer than its bound; stopping anyway", "bound", shutdownBound)
	}
	if p.echo != nil {
		_ = p.echo.Close()
	}
}

// remoteConfig builds the remote listener: cluster.bind, advertised as
// cluster.advertise, with mutual TLS when configured, keepalives so a
// vanished peer is noticed, and interceptors that keep a malformed peer
// from crashing the process (protoactor answers two RPCs with a panic and
// dereferences nil on an unknown message type).
func remoteConfig(cfg config.Cluster) (*remote.Config, error) {
	host, portS, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	port, _ := strconv.Atoi(portS)
	serverOpts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, status.Error(codes.Unimplemented, "not served")
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = status.Error(codes.Internal, "internal error")
				}
			}()
			return h(srv, ss)
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
	}
	dialOpts := []grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true})}
	if cfg.TLS.CertFile != "" {
		serverTLS, clientTLS, err := nodeTLS(cfg.TLS)
		if err != nil {
			return nil, err
		}
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(serverTLS)))
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	} else {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	opts := []remote.ConfigOption{remote.WithServerOptions(serverOpts...), remote.WithDialOptions(dialOpts...)}
	if cfg.Advertise != "" {
		opts = append(opts, remote.WithAdvertisedHost(cfg.Advertise))
	}
	rc := remote.Configure(host, port, opts...)
	// A peer that went away is given up after one failed dial (protoactor
	// sleeps 2 s after each, 5 times by default): its members are dropped
	// by the provider anyway, and a graceful shutdown waits for these.
	rc.MaxRetryCount = 1
	return rc, nil
}

// nodeTLS loads cluster.tls: every node presents its certificate and
// requires the peer's, both signed by ca_file, and verifies server_name.
// The files are read per handshake, so rotated certificates are picked up
// by new connections.
func nodeTLS(c config.ClusterTLS) (server, client *tls.Config, err error) {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.tls.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("cluster.tls.ca_file: no PEM certificate in %s", c.CAFile)
	}
	load := func() (*tls.Certificate, error) {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.tls.cert_file: %w", err)
		}
		return &cert, nil
	}
	if _, err := load(); err != nil {
		return nil, nil, err
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return load() }}
	client = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: c.ServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return load() }}
	return server, client, nil
}

// provider builds the membership provider cluster.provider names.
func (p *placement) provider(cfg config.Cluster) (cluster.ClusterProvider, error) {
	switch cfg.Provider {
	case config.ProviderStatic:
		return p.staticProvider(cfg)
	case config.ProviderEtcd:
		return etcdProvider(cfg)
	case config.ProviderKubernetes:
		if err := clearStaleLabels(); err != nil {
			return nil, fmt.Errorf("cluster.provider kubernetes: %w", err)
		}
		prov, err := k8s.New()
		if err != nil {
			return nil, fmt.Errorf("cluster.provider kubernetes: %w (it runs only inside a pod)", err)
		}
		return prov, nil
	}
	return nil, fmt.Errorf("cluster.provider: unknown provider %q", cfg.Provider)
}

// staticProvider is protoactor's automanaged provider over the fixed peer
// list. Its membership endpoint would bind every interface; here it
// listens on cluster.bind's host only, on a listener bound before start so
// that a busy port is an error, not a log line.
func (p *placement) staticProvider(cfg config.Cluster) (cluster.ClusterProvider, error) {
	host, _, _ := net.SplitHostPort(cfg.Bind)
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.Static.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster.static.port: listen on %s: %w", addr, err)
	}
	e := labstack.New()
	e.HideBanner, e.HidePort = true, true
	e.Listener = ln
	e.GET("/_health", func(c labstack.Context) error {
		sys := p.cluster.ActorSystem
		h, port, err := sys.GetHostPort()
		if err != nil {
			return c.NoContent(http.StatusServiceUnavailable)
		}
		return c.JSON(http.StatusOK, automanaged.NewNode(cfg.Name, sys.ID, h, port, cfg.Static.Port, p.cluster.GetClusterKinds()))
	})
	p.echo = e
	// Poll peers four times per heartbeat: a dead node is dropped within
	// about a quarter of cluster.heartbeat_expiration.
	refresh := max(cfg.HeartbeatExpiration/4, 250*time.Millisecond)
	return automanaged.NewWithTesting(refresh, cfg.Static.Port, e, cfg.Static.Peers...), nil
}

// blockingDial makes the etcd client's first dial wait (up to DialTimeout)
// and fail, instead of returning a client that retries in the background
// while protoactor waits on it for good. etcd's clientv3 still dials with
// grpc.DialContext, which honours it.
//
//lint:ignore SA1019 clientv3 dials with DialContext, where WithBlock is supported
var blockingDial = grpc.WithBlock()

// etcdProvider is protoactor's etcd provider. The client dials with a
// deadline first: protoactor's StartMember waits for good on an etcd it
// cannot reach.
func etcdProvider(cfg config.Cluster) (cluster.ClusterProvider, error) {
	ec := clientv3.Config{
		Endpoints:   cfg.Etcd.Endpoints,
		DialTimeout: 5 * time.Second,
		Username:    cfg.Etcd.Username,
		Password:    cfg.Etcd.Password,
		DialOptions: []grpc.DialOption{blockingDial},
	}
	if cfg.Etcd.CAFile != "" || cfg.Etcd.CertFile != "" {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.Etcd.CAFile != "" {
			pem, err := os.ReadFile(cfg.Etcd.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.etcd.ca_file: %w", err)
			}
			t.RootCAs = x509.NewCertPool()
			if !t.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cluster.etcd.ca_file: no PEM certificate in %s", cfg.Etcd.CAFile)
			}
		}
		if cfg.Etcd.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.Etcd.CertFile, cfg.Etcd.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.etcd.cert_file: %w", err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		ec.TLS = t
	}
	prov, err := etcd.NewWithConfig(cfg.Etcd.Prefix+"/", ec)
	if err != nil {
		return nil, fmt.Errorf("cluster.etcd.endpoints: reach etcd: %w", err)
	}
	return prov, nil
}

// conversationProps is the conversation kind's props: the same actor as in
// single-node mode, activated by the cluster on the node that owns it.
func (s *System) conversationProps() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return newConversation(s, "", &clusterActivation{p: s.placement})
	})
}

// clusterActivation is a conversation actor activated by the cluster on
// the node that owns the conversation (see activation). It learns its
// conversation from its cluster identity, loads under a new epoch
// (fencing.go), serves the relays of every node (relay.go), and stops
// itself when idle or done: the cluster activates it again on next use.
type clusterActivation struct {
	p          *placement
	rs         relayState
	counted    bool
	epochTimer *time.Timer // the next checkEpoch (fencing.go)
}

// start takes the conversation ID from the cluster identity.
func (a *clusterActivation) start(ctx actor.Context, c *conversation) {
	c.id = cluster.GetClusterIdentity(ctx).Identity
	c.fan.id = c.id
	c.fan.tail.off = true
	if a.p != nil && !a.counted {
		a.counted = true
		a.p.owned.Add(1)
	}
	a.armEpochCheck(ctx)
}

// release stops the activation: passivated when idle, or done.
func (a *clusterActivation) release(ctx actor.Context, c *conversation, idle bool) {
	if a.epochTimer != nil {
		a.epochTimer.Stop()
	}
	if a.p != nil && a.counted {
		a.counted = false
		a.p.owned.Add(-1)
	}
	ctx.Poison(ctx.Self())
}

// handle takes what only a cluster activation gets: requests from other
// nodes (wire.go), relay subscriptions and runtime registrations
// (relay.go), and deletes, which the owner carries out.
func (a *clusterActivation) handle(ctx actor.Context, c *conversation, msg any, sender *actor.PID) bool {
	switch m := msg.(type) {
	case *cluster.ClusterInit:
	case *clusterpb.Subscribe:
		a.subscribeRelay(ctx, c, m, sender)
	case *clusterpb.Unsubscribe:
		if r := pidOf(m.Relay); r != nil && a.rs.relays[wireKey(r)] != nil {
			delete(a.rs.relays, wireKey(r))
			a.unwatchRelay(ctx, r)
		}
	case *actor.Terminated:
		a.relayGone(ctx, c, m.Who) // a relay's node went away
	case *clusterpb.AttachRuntime:
		a.attachRuntime(ctx, c, m, sender)
	case *clusterpb.DetachRuntime:
		a.detachRuntime(ctx, c, m.Conn, sender)
	case *clusterpb.Command:
		if r, ok := m.Command.(*clusterpb.Command_Reply); ok {
			if rt, ok := a.rs.runtimes[wireKey(pidOf(r.Reply.Conn))]; ok {
				c.handle(ctx, &runtimeReplied{Conn: rt.proxy, ID: r.Reply.Id, Reply: core.Reply{Status: int(r.Reply.Status), Body: r.Reply.Body}}, nil)
			}
			return true
		}
		return c.fromWire(ctx, msg, sender)
	case *clusterpb.Delete:
		a.delete(ctx, c, sender)
	case *ownerDeleted:
		a.deleted(ctx, c, m)
	case *checkEpoch:
		a.checkEpochNow(ctx, c)
	case *epochChecked:
		a.epochRead(ctx, c, m)
	default:
		return c.fromWire(ctx, msg, sender)
	}
	return true
}

// ownerDeleted reports the store's delete to the owner that asked for it.
type ownerDeleted struct {
	Reply *actor.PID
	Err   error
}

// delete removes the conversation from the store off the mailbox; deleted
// then closes every node's sockets with 4004.
func (a *clusterActivation) delete(ctx actor.Context, c *conversation, sender *actor.PID) {
	self, root, store, id := ctx.Self(), ctx.ActorSystem().Root, c.sys.store, c.id
	go func() {
		err := store.DeleteConversation(context.Background(), id)
		root.Send(self, &ownerDeleted{Reply: sender, Err: err})
	}()
}

func (a *clusterActivation) deleted(ctx actor.Context, c *conversation, m *ownerDeleted) {
	if m.Err != nil {
		reply(ctx, m.Reply, &clusterpb.Result{Error: encodeError(m.Err)})
		return
	}
	c.fan.closeAll(ctx, core.DisconnectNotFound)
	a.stopping(ctx, c, core.CloseConversationNotFnd)
	c.gone, c.goneErr = true, fmt.Errorf("conversation %s: %w", c.id, core.ErrNotFound)
	reply(ctx, m.Reply, &clusterpb.Result{})
	a.release(ctx, c, false)
}
