package api

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cairn-ai/cairn/internal/oidc"
)

// OIDCConfig lets the organisation's identity provider stand in for Cairn's own tokens: a bearer JWT from the
// provider is verified against its published keys, and the groups it carries are mapped to roles. It is the
// "oidc" file that `cairn serve --oidc FILE` reads (YAML or JSON).
type OIDCConfig struct {
	oidc.Config
	// PrincipalClaim names the claim that identifies the caller (default "sub"); the principal recorded as
	// `actor` is "oidc:" and its value. Prefer a stable, opaque identifier over an e-mail address: actors are
	// stored in clear in envelopes.
	PrincipalClaim string `json:"principal_claim,omitempty"`
	// GroupsClaim names the claim listing the caller's groups (default "groups").
	GroupsClaim string `json:"groups_claim,omitempty"`
	// Groups maps a group to the roles it grants, optionally limited to systems. A caller in no mapped group is
	// authenticated but may do nothing.
	Groups map[string]Grant `json:"groups"`
}

// Grant is a set of roles, limited to some systems (empty: every system).
type Grant struct {
	Roles   []string `json:"roles"`
	Systems []string `json:"systems,omitempty"`
}

// OIDC authenticates provider-issued JWTs.
type OIDC struct {
	cfg OIDCConfig
	v   *oidc.Verifier
}

// NewOIDC checks the configuration: every role and system named must be valid.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.PrincipalClaim == "" {
		cfg.PrincipalClaim = "sub"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	for g, gr := range cfg.Groups {
		p := Principal{Name: "group " + g, Roles: gr.Roles, Systems: gr.Systems}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("oidc: groups.%s: %v", g, err)
		}
	}
	v, err := oidc.NewVerifier(cfg.Config)
	if err != nil {
		return nil, err
	}
	return &OIDC{cfg: cfg, v: v}, nil
}

// Authenticate returns the principal of a verified token, or nil and why not.
func (o *OIDC) Authenticate(ctx context.Context, token string) (*Principal, error) {
	c, err := o.v.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	id := c.String(o.cfg.PrincipalClaim)
	if strings.TrimSpace(id) == "" || len(id) > 120 {
		return nil, fmt.Errorf("the %s claim is missing or too long", o.cfg.PrincipalClaim)
	}
	p := &Principal{Name: "oidc:" + id}
	for _, g := range c.Strings(o.cfg.GroupsClaim) {
		if gr, ok := o.cfg.Groups[g]; ok {
			p.Grants = append(p.Grants, gr)
			for _, r := range gr.Roles {
				if !slices.Contains(p.Roles, r) {
					p.Roles = append(p.Roles, r)
				}
			}
		}
	}
	return p, nil
}
