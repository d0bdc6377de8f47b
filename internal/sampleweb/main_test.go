package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// start serves cfg on a loopback port and returns its base URL, the signal
// channel and the server's exit.
func start(t *testing.T, cfg config) (string, chan os.Signal, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- serve(l, cfg, "pod-a", t.Logf, sigs)
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case sigs <- syscall.SIGTERM:
		default:
		}
		<-exited
	})
	return "http://" + l.Addr().String(), sigs, done
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAnswersVersionAndCounts(t *testing.T) {
	base, _, _ := start(t, config{version: "v7", drainTimeout: time.Second})
	for i := 1; i <= 3; i++ {
		code, body := get(t, base+"/")
		var got struct {
			Version string
			Host    string
			Request int
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
			t.Fatalf("GET / = %d %q (%v)", code, body, err)
		}
		if got.Version != "v7" || got.Host != "pod-a" || got.Request != i {
			t.Errorf("GET / #%d = %+v", i, got)
		}
	}
	// Probes and the counter itself are not application traffic.
	get(t, base+"/healthz")
	get(t, base+"/ready")
	get(t, base+"/stats")
	_, body := get(t, base+"/stats")
	if !strings.Contains(body, `"served":3`) {
		t.Errorf("/stats = %s, want served 3", body)
	}
}

func TestReadiness(t *testing.T) {
	t.Run("ready delay", func(t *testing.T) {
		base, _, _ := start(t, config{readyDelay: 300 * time.Millisecond, drainTimeout: time.Second})
		if code, _ := get(t, base+"/healthz"); code != 200 {
			t.Errorf("/healthz = %d while starting, want 200 (liveness depends on nothing)", code)
		}
		if code, _ := get(t, base+"/ready"); code != 503 {
			t.Errorf("/ready = %d before the delay, want 503", code)
		}
		time.Sleep(400 * time.Millisecond)
		if code, _ := get(t, base+"/ready"); code != 200 {
			t.Errorf("/ready = %d after the delay, want 200", code)
		}
	})
	t.Run("never ready", func(t *testing.T) {
		base, _, _ := start(t, config{neverReady: true, drainTimeout: time.Second})
		if code, _ := get(t, base+"/ready"); code != 503 {
			t.Errorf("/ready = %d, want 503", code)
		}
		if code, _ := get(t, base+"/"); code != 200 {
			t.Errorf("GET / = %d, want 200 (unready is not down)", code)
		}
	})
}

func TestDrainsOnSIGTERM(t *testing.T) {
	base, sigs, done := start(t, config{version: "v1", shutdownDelay: 200 * time.Millisecond, drainTimeout: 5 * time.Second})
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/?delay=700ms")
		if err != nil {
			slow <- -1
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(100 * time.Millisecond) // the request is in flight
	sigs <- syscall.SIGTERM
	time.Sleep(50 * time.Millisecond)
	// During the shutdown delay it still serves, but says it is not ready.
	if code, _ := get(t, base+"/ready"); code != 503 {
		t.Errorf("/ready while draining = %d, want 503", code)
	}
	if code := <-slow; code != 200 {
		t.Errorf("request in flight at SIGTERM ended with %d, want 200", code)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if _, err := http.Get(base + "/"); err == nil {
		t.Error("still answering after draining")
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"SAMPLEWEB_VERSION": "v2", "SAMPLEWEB_NEVER_READY": "true", "SAMPLEWEB_START_DELAY": "3s"}
	c, err := parseConfig([]string{"-listen=:9999"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.version != "v2" || !c.neverReady || c.startDelay != 3*time.Second || c.listen != ":9999" {
		t.Errorf("config %+v", c)
	}
	if _, err := parseConfig([]string{"-ready-delay=soon"}, func(string) string { return "" }); err == nil {
		t.Error("a bad duration was accepted")
	}
}

func TestFetch(t *testing.T) {
	other, _, _ := start(t, config{version: "v9", drainTimeout: time.Second})
	base, _, _ := start(t, config{version: "v1", drainTimeout: time.Second})
	code, body := get(t, base+"/fetch?url="+other+"/")
	if code != 200 || !strings.Contains(body, `\"version\":\"v9\"`) {
		t.Errorf("/fetch = %d %s, want the other server's answer", code, body)
	}
	if code, _ := get(t, base+"/fetch?url=http://127.0.0.1:1/"); code != 502 {
		t.Errorf("/fetch of a closed port = %d, want 502", code)
	}
}

func TestValidateWebhook(t *testing.T) {
	base, _, _ := start(t, config{version: "v1", drainTimeout: time.Second})
	review := func(labels string) map[string]any {
		body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","object":{"metadata":{"name":"cm","labels":{` + labels + `}}}}}`
		resp, err := http.Post(base+"/validate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Response map[string]any }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out.Response
	}
	if r := review(`"a":"b"`); r["allowed"] != true || r["uid"] != "u-1" {
		t.Errorf("plain object: %v", r)
	}
	if r := review(`"sampleweb.homelab/deny":"true"`); r["allowed"] != false {
		t.Errorf("labelled object: %v, want refused", r)
	}
}

func TestNeverReadyIsABoolFlag(t *testing.T) {
	c, err := parseConfig([]string{"-never-ready"}, func(string) string { return "" })
	if err != nil || !c.neverReady {
		t.Errorf("-never-ready: %+v %v", c, err)
	}
}
