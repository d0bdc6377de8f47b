package noderuntime

import (
	"context"
	"net/http"

	"github.com/homelab/rack/internal/jsonapi"
)

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

func getNode(ctx context.Context, api *jsonapi.Client, name string) (*node, error) {
	var n node
	return &n, api.Do(ctx, http.MethodGet, "/api/v1/nodes/"+name, "", nil, &n)
}

func listNodes(ctx context.Context, api *jsonapi.Client) ([]node, error) {
	var l struct {
		Items []node `json:"items"`
	}
	return l.Items, api.Do(ctx, http.MethodGet, "/api/v1/nodes", "", nil, &l)
}
