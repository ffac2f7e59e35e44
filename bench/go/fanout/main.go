// Command fanout is the benchmark's Listen load in Go: N Listen streams over a few connections, each
// token's delivery latency taken where it arrives, a JSON summary on stdout. `python -m bench fanout|cores
// --clients go` builds and runs it (bench/load.py), so that the clients cost the server's cores less
// than the bench's own Python streams do. Not part of the Go client (clients/go/test does not build it).
//
//	fanout --target 127.0.0.1:PORT --sessions 1000 --listeners 10 --prefix f --wait-go
//	fanout --target 127.0.0.1:PORT --sessions 1000 --prefix g --agent paced --prompt '{"tokens": 200, ...}'
//
// Stream n listens to session <prefix><n / listeners>, on connection n % connections (one per
// --per-conn streams). Streams open --ramp at a time, each batch once all its streams have their `begin`
// (with --agent, after a Run of each of the batch's sessions). Once all are open it prints
// "bench-go: open N" on stderr; with --wait-go its clock then starts at a "go" line on stdin, else it
// started at the beginning. It exits once every stream has its `end`.
//
// A token is a text event's "<due_ns>:<made_ns>" (bench/worker.py's token_times, CLOCK_MONOTONIC):
// latency from due and from made (the model's yield) to the event's arrival here.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"google.golang.org/grpc"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
	"github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/streamclient"
)

const maxErrors = 5 // error messages kept in the summary

// window is each stream's and connection's flow-control window. Setting it turns off grpc-go's BDP
// estimation, which pings the server on nearly every data frame when messages are sparse (as each token
// here is): a ping per delivery that the server answers, which grpc-core's own BDP probe (the Python
// clients') does not do, and which cost the grpc.aio floor server ~20 µs a delivery (bench/README.md).
const window = 1 << 20

var (
	target      = flag.String("target", "", "server address, host:port")
	prefix      = flag.String("prefix", "f", "session id prefix")
	sessions    = flag.Int("sessions", 1, "sessions")
	listeners   = flag.Int("listeners", 1, "Listen streams per session")
	perConn     = flag.Int("per-conn", 1000, "streams per connection")
	ramp        = flag.Int("ramp", 100, "streams opened at a time")
	waitSeconds = flag.Uint("wait-seconds", 600, "ListenRequest.wait_seconds")
	agent       = flag.String("agent", "", "Run this agent on each session as its streams open")
	prompt      = flag.String("prompt", "", "the Run's prompt")
	waitGo      = flag.Bool("wait-go", false, "once open, start the clock at a `go` line on stdin")
	timeout     = flag.Duration("timeout", 15*time.Minute, "give up after this long")
	latencies   = flag.Bool("latencies", false, "add every token's latencies (ms) to the summary")
	bdp         = flag.Bool("bdp", false, "keep grpc-go's BDP pings (its default; see window)")
)

// clock reads CLOCK_MONOTONIC in ns (Python's time.monotonic_ns): one system call at start, then Go's own
// monotonic clock, which is the same clock.
type clock struct {
	base  int64
	start time.Time
}

func newClock() clock {
	var ts syscall.Timespec
	const clockMonotonic = 1
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		fail("clock_gettime: %v", errno)
	}
	return clock{base: ts.Nano(), start: time.Now()}
}

func (c clock) now() int64 { return c.base + int64(time.Since(c.start)) }

// stream is what one Listen stream received.
type stream struct {
	begun    chan struct{}
	ended    chan struct{}
	fromDue  []float64 // ms
	fromMade []float64
	arrived  []int64 // monotonic ns of each token's arrival
	errored  bool    // it carried an `error` event
	err      error   // Listen failed
}

func (s *stream) listen(ctx context.Context, c *streamclient.Client, session string, clk clock) {
	defer close(s.ended)
	begun := false
	s.err = c.Listen(ctx, session, streamclient.ListenOptions{WaitSeconds: uint32(*waitSeconds)}, func(event *streamv1.Event) error {
		now := clk.now()
		switch event.Type {
		case streamv1.EventType_EVENT_TYPE_BEGIN:
			if !begun {
				begun = true
				close(s.begun)
			}
		case streamv1.EventType_EVENT_TYPE_ERROR:
			s.errored = true
		}
		for _, token := range strings.Fields(tokenText(event)) {
			due, made, ok := strings.Cut(token, ":")
			if !ok {
				continue
			}
			dueNs, err1 := strconv.ParseInt(due, 10, 64)
			madeNs, err2 := strconv.ParseInt(made, 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			s.fromDue = append(s.fromDue, float64(now-dueNs)/1e6)
			s.fromMade = append(s.fromMade, float64(now-madeNs)/1e6)
			s.arrived = append(s.arrived, now)
		}
		return nil
	})
}

// tokenText is the text a text part event carries (the first token comes with `part_start`).
func tokenText(event *streamv1.Event) string {
	switch {
	case event.GetKind() == streamv1.EventKind_EVENT_KIND_PART_DELTA:
		return event.GetContentDelta()
	case event.GetKind() == streamv1.EventKind_EVENT_KIND_PART_START && event.GetPartKind() == streamv1.PartKind_PART_KIND_TEXT:
		return event.GetContent()
	}
	return ""
}

// summary is printed as JSON on stdout.
type summary struct {
	Streams    int      `json:"streams"`
	Count      int      `json:"count"`
	P50        float64  `json:"p50_ms"`
	P99        float64  `json:"p99_ms"`
	YieldP50   float64  `json:"yield_p50_ms"`
	YieldP99   float64  `json:"yield_p99_ms"`
	Seconds    float64  `json:"seconds"`
	Rate       float64  `json:"rate"`
	PerSecond  []int    `json:"per_second"`
	Errored    int      `json:"errored"`
	Failed     int      `json:"failed"`
	Errors     []string `json:"errors"`
	CPU        float64  `json:"cpu_s"`
	CPUTotal   float64  `json:"cpu_total_s"`
	MaxRSSKiB  int64    `json:"max_rss_kib"`
	Conns      int      `json:"connections"`
	GoMaxProcs int      `json:"gomaxprocs"`
	// With --latencies: every token's, in ms, rounded to the µs (sorted: which stream's is not kept).
	Latencies      []float64 `json:"latencies_ms,omitempty"`
	YieldLatencies []float64 `json:"yield_latencies_ms,omitempty"`
}

// percentile is the nearest-rank percentile (bench/table.py's) of sorted values; 0 for none.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return sorted[rank]
}

func cpuSeconds() (float64, int64) {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		fail("getrusage: %v", err)
	}
	seconds := func(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime), usage.Maxrss
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-go: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	flag.Parse()
	if *target == "" || *sessions < 1 || *listeners < 1 || *perConn < 1 || *ramp < 1 {
		fail("usage: fanout --target HOST:PORT [--sessions N] [--listeners K] ...")
	}
	clk := newClock()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	total := *sessions * *listeners
	clients := make([]*streamclient.Client, (total+*perConn-1) / *perConn)
	for i := range clients {
		options := []grpc.DialOption{grpc.WithInsecure()}
		if !*bdp {
			options = append(options, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
		}
		conn, err := grpc.Dial(*target, options...) // each Dial its own connection
		if err != nil {
			fail("dial: %v", err)
		}
		defer conn.Close()
		clients[i] = streamclient.New(conn, "")
	}
	streams := make([]*stream, total)
	for first := 0; first < total; first += *ramp {
		last := first + *ramp
		if last > total {
			last = total
		}
		for n := first; n < last; n++ {
			s := &stream{begun: make(chan struct{}), ended: make(chan struct{})}
			streams[n] = s
			go s.listen(ctx, clients[n%len(clients)], fmt.Sprintf("%s%d", *prefix, n / *listeners), clk)
		}
		if *agent != "" {
			start(ctx, clients, first, last)
		}
		for n := first; n < last; n++ {
			waitBegun(ctx, n, streams[n])
		}
	}
	fmt.Fprintf(os.Stderr, "bench-go: open %d\n", total)
	if *waitGo {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if strings.TrimSpace(line) != "go" {
			fail("expected `go` on stdin, got %q (%v)", line, err)
		}
	}
	goNs, cpuAtGo := clk.now(), 0.0
	if *waitGo {
		cpuAtGo, _ = cpuSeconds()
	} else {
		goNs = clk.base
	}
	for n, s := range streams {
		select {
		case <-s.ended:
		case <-ctx.Done():
			fail("stream %d: no end within %v", n, *timeout)
		}
	}
	endNs := clk.now()
	cpu, maxRSS := cpuSeconds()
	fmt.Println(string(must(json.Marshal(summarize(streams, goNs, endNs, cpu, cpuAtGo, maxRSS, len(clients))))))
}

// waitBegun returns once the stream has its `begin` (it may have ended since: a short run on a slow
// machine); it fails if it ended without one, or on ctx's timeout.
func waitBegun(ctx context.Context, n int, s *stream) {
	select {
	case <-s.begun:
		return
	case <-s.ended:
		select {
		case <-s.begun: // both ready: select picked at random
			return
		default:
			fail("stream %d ended before its begin: %v", n, s.err)
		}
	case <-ctx.Done():
		fail("stream %d: no begin within %v", n, *timeout)
	}
}

// start runs the agent on the sessions of streams first..last, all at once; it fails on any error.
func start(ctx context.Context, clients []*streamclient.Client, first, last int) {
	var wg sync.WaitGroup
	errs := make(chan error, last-first)
	for n := first; n < last; n++ {
		if n%*listeners != 0 {
			continue // a session's first stream runs it
		}
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			if _, err := clients[n%len(clients)].Run(ctx, *agent, fmt.Sprintf("%s%d", *prefix, n / *listeners), *prompt); err != nil {
				errs <- err
			}
		}(n)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		fail("Run: %v", err)
	}
}

func summarize(streams []*stream, goNs, endNs int64, cpu, cpuAtGo float64, maxRSS int64, conns int) summary {
	var fromDue, fromMade []float64
	perSecond := make([]int, int((endNs-goNs)/1e9)+1)
	out := summary{Streams: len(streams), Errors: []string{}, Conns: conns, MaxRSSKiB: maxRSS}
	for _, s := range streams {
		fromDue = append(fromDue, s.fromDue...)
		fromMade = append(fromMade, s.fromMade...)
		for _, at := range s.arrived {
			if second := (at - goNs) / 1e9; second >= 0 && int(second) < len(perSecond) {
				perSecond[second]++
			}
		}
		if s.errored {
			out.Errored++
		}
		if s.err != nil {
			out.Failed++
			if len(out.Errors) < maxErrors {
				out.Errors = append(out.Errors, s.err.Error())
			}
		}
	}
	sort.Float64s(fromDue)
	sort.Float64s(fromMade)
	out.Count = len(fromDue)
	out.P50, out.P99 = percentile(fromDue, 50), percentile(fromDue, 99)
	out.YieldP50, out.YieldP99 = percentile(fromMade, 50), percentile(fromMade, 99)
	out.Seconds = float64(endNs-goNs) / 1e9
	if out.Seconds > 0 {
		out.Rate = float64(out.Count) / out.Seconds
	}
	out.PerSecond = perSecond
	out.CPU, out.CPUTotal = cpu-cpuAtGo, cpu
	out.GoMaxProcs = runtime.GOMAXPROCS(0)
	if *latencies {
		out.Latencies, out.YieldLatencies = rounded(fromDue), rounded(fromMade)
	}
	return out
}

func rounded(values []float64) []float64 {
	out := make([]float64, len(values))
	for i, v := range values {
		out[i] = math.Round(v*1000) / 1000
	}
	return out
}

func must[T any](value T, err error) T {
	if err != nil {
		fail("%v", err)
	}
	return value
}
