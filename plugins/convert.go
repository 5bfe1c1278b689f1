package plugins

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// This file is the only place that knows both the wire (authpb) and the
// domain (core, Info) types.

func infoToPB(i Info) *authpb.InfoResponse {
	return &authpb.InfoResponse{
		Name:    i.Name,
		Version: i.Version,
		Inputs: &authpb.Inputs{
			QueryParams:  i.Inputs.QueryParams,
			Headers:      i.Inputs.Headers,
			Subprotocol:  i.Inputs.Subprotocol,
			FirstMessage: i.Inputs.FirstMessage,
		},
		WantsKeys: i.WantsKeys,
	}
}

func infoFromPB(r *authpb.InfoResponse) Info {
	in := r.GetInputs()
	return Info{
		Name:    r.GetName(),
		Version: r.GetVersion(),
		Inputs: Inputs{
			QueryParams:  in.GetQueryParams(),
			Headers:      canonicalHeaders(in.GetHeaders()),
			Subprotocol:  in.GetSubprotocol(),
			FirstMessage: in.GetFirstMessage(),
		},
		WantsKeys: r.GetWantsKeys(),
	}
}

func canonicalHeaders(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = http.CanonicalHeaderKey(n)
	}
	return out
}

func configureToPB(r ConfigureRequest) *authpb.ConfigureRequest {
	return &authpb.ConfigureRequest{ConfigJson: r.Config, KeyDigests: r.KeyDigests, RuntimeKeyDigests: r.RuntimeKeyDigests}
}

func configureFromPB(r *authpb.ConfigureRequest) ConfigureRequest {
	return ConfigureRequest{Config: r.GetConfigJson(), KeyDigests: r.GetKeyDigests(), RuntimeKeyDigests: r.GetRuntimeKeyDigests()}
}

// requestToPB converts req for a plugin that reads in: the routing metadata
// always, and of the credential-bearing parts only those it declared.
func requestToPB(req *core.Request, in Inputs) *authpb.AuthenticateRequest {
	pb := &authpb.AuthenticateRequest{
		Route:      string(req.Route),
		Method:     req.Method,
		Path:       req.Path,
		PathParams: req.PathParams,
		RemoteAddr: req.RemoteAddr,
		Origin:     req.Origin,
	}
	for _, name := range in.QueryParams {
		if v, ok := req.Query[name]; ok {
			if pb.Query == nil {
				pb.Query = make(map[string]*authpb.Values, len(in.QueryParams))
			}
			pb.Query[name] = &authpb.Values{Values: v}
		}
	}
	for _, name := range in.Headers {
		if v := headerValues(req.Header, name); len(v) > 0 {
			if pb.Header == nil {
				pb.Header = make(map[string]*authpb.Values, len(in.Headers))
			}
			pb.Header[name] = &authpb.Values{Values: v}
		}
	}
	if in.Subprotocol {
		pb.Subprotocols = req.Subprotocols
	}
	if in.FirstMessage {
		pb.FirstMessage = req.FirstMessage
	}
	return pb
}

func requestFromPB(pb *authpb.AuthenticateRequest) *core.Request {
	req := &core.Request{
		Route:        core.Route(pb.GetRoute()),
		Method:       pb.GetMethod(),
		Path:         pb.GetPath(),
		PathParams:   pb.GetPathParams(),
		Query:        make(map[string][]string, len(pb.GetQuery())),
		Header:       make(http.Header, len(pb.GetHeader())),
		RemoteAddr:   pb.GetRemoteAddr(),
		Subprotocols: pb.GetSubprotocols(),
		Origin:       pb.GetOrigin(),
		FirstMessage: pb.GetFirstMessage(),
	}
	for k, v := range pb.GetQuery() {
		req.Query[k] = v.GetValues()
	}
	for k, v := range pb.GetHeader() {
		ck := http.CanonicalHeaderKey(k)
		req.Header[ck] = append(req.Header[ck], v.GetValues()...)
	}
	return req
}

func resultToPB(r core.Result) *authpb.AuthenticateResponse {
	switch r.Decision {
	case core.Abstain:
		return &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ABSTAIN}
	case core.Allow:
		return &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ALLOW, Principal: principalToPB(r.Principal)}
	case core.Deny:
		return &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_DENY, Reason: r.Reason}
	case core.Error:
		msg := "unspecified failure"
		if r.Err != nil {
			msg = r.Err.Error()
		}
		return &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR, Error: msg}
	}
	return &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR, Error: fmt.Sprintf("unknown decision %d", r.Decision)}
}

func resultFromPB(pb *authpb.AuthenticateResponse) core.Result {
	switch pb.GetDecision() {
	case authpb.Decision_DECISION_ABSTAIN:
		return core.Abstained()
	case authpb.Decision_DECISION_ALLOW:
		if pb.GetPrincipal() == nil {
			return core.Failed(errors.New("plugin allowed without a principal"))
		}
		return core.Allowed(principalFromPB(pb.GetPrincipal()))
	case authpb.Decision_DECISION_DENY:
		return core.Denied(pb.GetReason())
	case authpb.Decision_DECISION_ERROR:
		return core.Failed(fmt.Errorf("plugin reported: %s", pb.GetError()))
	}
	return core.Failed(fmt.Errorf("plugin answered unknown decision %d", pb.GetDecision()))
}

func principalToPB(p *core.Principal) *authpb.Principal {
	if p == nil {
		return nil
	}
	pb := &authpb.Principal{Subject: p.Subject, Scopes: p.Scopes, Claims: p.Claims, Roles: p.Roles}
	if !p.Expiry.IsZero() {
		pb.Expiry = timestamppb.New(p.Expiry)
	}
	return pb
}

func principalFromPB(pb *authpb.Principal) *core.Principal {
	p := &core.Principal{Subject: pb.GetSubject()}
	if len(pb.GetScopes()) > 0 {
		p.Scopes = pb.GetScopes()
	}
	if len(pb.GetClaims()) > 0 {
		p.Claims = pb.GetClaims()
	}
	if len(pb.GetRoles()) > 0 {
		p.Roles = pb.GetRoles()
	}
	if pb.GetExpiry() != nil {
		p.Expiry = pb.GetExpiry().AsTime()
	}
	return p
}
