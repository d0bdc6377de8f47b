package noderuntime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// apiClient reads Nodes over plain net/http: client-go would multiply the
// size of the fake k3s binary this package is linked into.
type apiClient struct {
	base string
	hc   *http.Client
}

// node is the part of a Node this package reads.
type node struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR string `json:"podCIDR"`
	} `json:"spec"`
	Status struct {
		Addresses []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
	} `json:"status"`
}

func (n *node) internalIP() string {
	for _, a := range n.Status.Addresses {
		if a.Type == "InternalIP" {
			return a.Address
		}
	}
	return ""
}

func (a *apiClient) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

func (a *apiClient) node(ctx context.Context, name string) (*node, error) {
	var n node
	return &n, a.get(ctx, "/api/v1/nodes/"+name, &n)
}

func (a *apiClient) nodes(ctx context.Context) ([]node, error) {
	var l struct {
		Items []node `json:"items"`
	}
	return l.Items, a.get(ctx, "/api/v1/nodes", &l)
}
