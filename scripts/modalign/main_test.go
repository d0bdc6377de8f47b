package main

import (
	"reflect"
	"testing"
)

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		graphs map[string]map[string]string
		want   map[string][]string
	}{{
		name: "a v1 library moves to the highest version across minors",
		graphs: map[string]map[string]string{
			"a": {"google.golang.org/grpc": "v1.72.1"},
			"b": {"google.golang.org/grpc": "v1.83.1"},
		},
		want: map[string][]string{"a": {"google.golang.org/grpc v1.83.1"}},
	}, {
		name: "golang.org/x moves across minors although it is v0",
		graphs: map[string]map[string]string{
			"a": {"golang.org/x/sys": "v0.38.0"},
			"b": {"golang.org/x/sys": "v0.49.0"},
			"c": {"golang.org/x/sys": "v0.43.0"},
		},
		want: map[string][]string{"a": {"golang.org/x/sys v0.49.0"}, "c": {"golang.org/x/sys v0.49.0"}},
	}, {
		name: "another v0 library moves within its minor only",
		graphs: map[string]map[string]string{
			"a": {"go.opentelemetry.io/otel/log": "v0.17.0", "github.com/google/gnostic-models": "v0.6.8"},
			"b": {"go.opentelemetry.io/otel/log": "v0.21.0", "github.com/google/gnostic-models": "v0.6.9"},
			"c": {"go.opentelemetry.io/otel/log": "v0.17.2", "github.com/google/gnostic-models": "v0.7.0"},
		},
		want: map[string][]string{
			"a": {"github.com/google/gnostic-models v0.6.9", "go.opentelemetry.io/otel/log v0.17.2"},
		},
	}, {
		name: "a pinned project moves to a later patch, never to another minor",
		graphs: map[string]map[string]string{
			"metallb":  {"k8s.io/client-go": "v0.34.1"},
			"traefik":  {"k8s.io/client-go": "v0.34.3"},
			"provider": {"k8s.io/client-go": "v0.33.3"},
			"rack":     {"k8s.io/client-go": "v0.36.4"},
		},
		want: map[string][]string{"metallb": {"k8s.io/client-go v0.34.3"}},
	}, {
		name: "a Kubernetes library at a commit moves only between builds of one Kubernetes minor",
		graphs: map[string]map[string]string{
			"metallb": {"k8s.io/apimachinery": "v0.34.1", "k8s.io/utils": "v0.0.0-20250604170112-4c0f3b243397"},
			"traefik": {"k8s.io/apimachinery": "v0.34.3", "k8s.io/utils": "v0.0.0-20250820121507-0af2bda4dd1d"},
			"rack":    {"k8s.io/apimachinery": "v0.36.4", "k8s.io/utils": "v0.0.0-20260210185600-b8788abfbbc2"},
		},
		want: map[string][]string{"metallb": {
			"k8s.io/apimachinery v0.34.3", "k8s.io/utils v0.0.0-20250820121507-0af2bda4dd1d",
		}},
	}, {
		name: "another pinned project at a commit stays there",
		graphs: map[string]map[string]string{
			"a": {"github.com/pulumi/esc": "v0.0.0-20250101000000-aaaaaaaaaaaa"},
			"b": {"github.com/pulumi/esc": "v0.0.0-20260101000000-bbbbbbbbbbbb"},
		},
		want: map[string][]string{},
	}, {
		name: "a module only one build compiles is its own business",
		graphs: map[string]map[string]string{
			"a": {"github.com/go-acme/lego/v4": "v4.20.0"},
			"b": {},
		},
		want: map[string][]string{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := plan(tc.graphs)
			for k, v := range got {
				if len(v) == 0 {
					delete(got, k)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}
