// The Go helpers that protoc-gen-errmap generates (*_errmap.go), against real
// peers: a grpc-go server returns them; a grpc-go client reads them with
// Is<Name> and EntryOf; the same client reads the errors of the real
// `errmap serve` (ERRMAP_BIN); and the Rust reader reads the Go server's
// errors through the shop's relay (RELAY_BIN), a real errmap server whose
// response layer lets them pass.
//
// scripts/test.sh generates the helpers into a GOPATH and runs `go vet` and
// `go test` on this package offline, with Debian's golang packages.
package errmapinterop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	shopv1 "example.com/shop/gen/go/shop/v1"
	errmapv1 "github.com/errmap/errmap/gen/go/errmap/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec sends and receives messages as the bytes they are, so the test
// needs no generated message types: the requests are a few bytes by hand.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// A grpc-go server of any method: the "x-case" header picks the error, built
// with the generated helpers. It fails every call, so it never reads the
// request.
func startGoServer(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(func(_ interface{}, stream grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(stream.Context())
		which := ""
		if values := md.Get("x-case"); len(values) > 0 {
			which = values[0]
		}
		switch which {
		case "over":
			return shopv1.ErrorQuantityOverLimit(map[string]string{"quantity": "12", "limit": "10"})
		case "missing":
			return shopv1.ErrorCartNotFound(nil)
		case "down":
			return shopv1.SetPushback(stream.Context(), shopv1.ErrorPaymentProviderDown(nil))
		case "busy":
			return errmapv1.SetPushback(stream.Context(), errmapv1.ErrorApiTooManyRequests(nil))
		case "plain":
			return status.Error(codes.NotFound, "no such card")
		}
		return status.Error(codes.Unimplemented, "no such case")
	}))
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call makes a unary call of raw bytes and returns its error and trailer.
func call(conn *grpc.ClientConn, method string, request []byte, md metadata.MD) (error, metadata.MD) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	var reply []byte
	var trailer metadata.MD
	err := conn.Invoke(ctx, method, &request, &reply, grpc.ForceCodec(rawCodec{}), grpc.Trailer(&trailer))
	return err, trailer
}

const placeOrder = "/shop.v1.Checkout/PlaceOrder"

func placeOrderCase(conn *grpc.ClientConn, which string) (error, metadata.MD) {
	return call(conn, placeOrder, []byte{}, metadata.Pairs("x-case", which))
}

func TestGoServerErrorsReadByGoClient(t *testing.T) {
	conn := dial(t, startGoServer(t))

	over, _ := placeOrderCase(conn, "over")
	if !shopv1.IsQuantityOverLimit(over) || shopv1.IsCartNotFound(over) || errmapv1.IsApiInvalidRequest(over) {
		t.Fatalf("over: wrong Is*: %v", over)
	}
	entry, ok := shopv1.EntryOf(over)
	if !ok {
		t.Fatalf("over: no entry: %v", over)
	}
	want := shopv1.Entry{
		Code: 6, Name: "SHOP_ERROR_QUANTITY_OVER_LIMIT", Reason: "SHOP_ERROR_QUANTITY_OVER_LIMIT",
		Domain: shopv1.ShopErrorDomain, GRPCCode: codes.InvalidArgument, HTTPStatus: 400, Category: "cart",
		Message: "The quantity 12 exceeds the limit of 10 per order.",
		Params:  map[string]string{"quantity": "12", "limit": "10"},
		Locale:  "en-US", LocalizedMessage: "The quantity 12 exceeds the limit of 10 per order.",
	}
	if !reflect.DeepEqual(*entry, want) {
		t.Fatalf("over: entry\n got %+v\nwant %+v", *entry, want)
	}
	if st, _ := status.FromError(over); st.Message() != want.Message || st.Code() != codes.InvalidArgument {
		t.Fatalf("over: status %v", st)
	}
	if _, ok := errmapv1.EntryOf(over); ok {
		t.Fatal("over: read as errmap's catalog")
	}

	missing, _ := placeOrderCase(conn, "missing")
	if !shopv1.IsCartNotFound(missing) || status.Code(missing) != codes.NotFound {
		t.Fatalf("missing: %v", missing)
	}

	down, trailer := placeOrderCase(conn, "down")
	if e, ok := shopv1.EntryOf(down); !ok || e.RetryDelay != 10*time.Second || !shopv1.IsPaymentProviderDown(down) {
		t.Fatalf("down: %v %+v", down, e)
	}
	if got := trailer.Get("grpc-retry-pushback-ms"); len(got) != 1 || got[0] != "10000" {
		t.Fatalf("down: pushback trailer %v", got)
	}

	busy, trailer := placeOrderCase(conn, "busy")
	if e, ok := errmapv1.EntryOf(busy); !ok || e.Code != 44 || e.RetryDelay != time.Second {
		t.Fatalf("busy: %v %+v", busy, e)
	}
	if got := trailer.Get("grpc-retry-pushback-ms"); len(got) != 1 || got[0] != "1000" {
		t.Fatalf("busy: pushback trailer %v", got)
	}

	plain, _ := placeOrderCase(conn, "plain")
	if _, ok := shopv1.EntryOf(plain); ok || shopv1.IsCartNotFound(plain) {
		t.Fatalf("plain: read as a catalog error: %v", plain)
	}
	if _, ok := shopv1.EntryOf(nil); ok {
		t.Fatal("nil: read as a catalog error")
	}
	if _, ok := shopv1.EntryOf(io.EOF); ok {
		t.Fatal("io.EOF: read as a catalog error")
	}
}

func TestTemplatesAndTheirArguments(t *testing.T) {
	// A missing argument leaves its placeholder, in sight; {{ and }} are braces.
	err := shopv1.ErrorQuantityOverLimit(map[string]string{"quantity": "3"})
	if got := status.Convert(err).Message(); got != "The quantity 3 exceeds the limit of {limit} per order." {
		t.Fatalf("message %q", got)
	}
	entry, ok := shopv1.EntryOf(err)
	if !ok || entry.Params["quantity"] != "3" || len(entry.Params) != 1 {
		t.Fatalf("entry %+v", entry)
	}
}

// A process that prints its address on its first line.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	addr  string
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	p := &proc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	line, err := p.out.ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("%s printed no address: %v", bin, err)
	}
	p.addr = strings.TrimPrefix(strings.TrimSpace(line), "listening on ")
	return p
}

// stop ends the process (stdin closed, then SIGTERM) and returns the rest
// of its output.
func (p *proc) stop(t *testing.T) string {
	t.Helper()
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(os.Interrupt)
	// The output is read to its end before Wait, which closes the pipe; a
	// process that does not exit is killed after 20 s.
	read := make(chan string, 1)
	go func() {
		rest, _ := io.ReadAll(p.out)
		read <- string(rest)
	}()
	var rest string
	select {
	case rest = <-read:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		t.Fatal("no exit in 20 s")
	}
	_ = p.cmd.Wait()
	return rest
}

func bin(t *testing.T, env, fallback string) string {
	if path := os.Getenv(env); path != "" {
		return path
	}
	return fallback
}

func TestErrmapServeErrorsReadByGoClient(t *testing.T) {
	errmapBin := bin(t, "ERRMAP_BIN", "errmap")
	open := start(t, errmapBin, "serve", "--addr", "127.0.0.1:0", "--stream-limit", "1")
	defer open.stop(t)
	conn := dial(t, open.addr)

	// GetError(code: 48): a miss, 47 with the code asked for.
	miss, _ := call(conn, "/errmap.v1.ErrorCatalog/GetError", []byte{0x08, 48}, nil)
	entry, ok := errmapv1.EntryOf(miss)
	if !ok || !errmapv1.IsApiItemNotFound(miss) || entry.Code != 47 || entry.Params["requestedCode"] != "48" {
		t.Fatalf("miss: %v %+v", miss, entry)
	}
	if entry.GRPCCode != codes.NotFound || status.Code(miss) != codes.NotFound {
		t.Fatalf("miss: code %v", status.Code(miss))
	}

	// The one stream place is held; a second Watch is shed with 44 and its delay.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := func() (grpc.ClientStream, error) {
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true},
			"/grpc.health.v1.Health/Watch", grpc.ForceCodec(rawCodec{}))
		if err != nil {
			return nil, err
		}
		request := []byte{}
		if err := stream.SendMsg(&request); err != nil {
			return nil, err
		}
		if err := stream.CloseSend(); err != nil {
			return nil, err
		}
		var first []byte
		return stream, stream.RecvMsg(&first)
	}
	if _, err := watch(); err != nil {
		t.Fatalf("first watch: %v", err)
	}
	_, shed := watch()
	entry, ok = errmapv1.EntryOf(shed)
	if !ok || !errmapv1.IsApiTooManyRequests(shed) || entry.RetryDelay != time.Second {
		t.Fatalf("shed: %v %+v", shed, entry)
	}

	// 21 without a token, from a server that wants one.
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("go interop secret, long enough, 32+\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	guarded := start(t, errmapBin, "serve", "--addr", "127.0.0.1:0",
		"--auth-jwt-secret-file", secret, "--auth-audience", "errmap")
	defer guarded.stop(t)
	noToken, _ := call(dial(t, guarded.addr), "/errmap.v1.ErrorCatalog/GetError", []byte{0x08, 1}, nil)
	if e, ok := errmapv1.EntryOf(noToken); !ok || !errmapv1.IsAuthRequired(noToken) || e.Code != 21 {
		t.Fatalf("no token: %v", noToken)
	}
}

func TestRustReadsAndRelaysGoErrorsUntouched(t *testing.T) {
	upstream := startGoServer(t)
	relay := start(t, bin(t, "RELAY_BIN", "shop-relay"), "127.0.0.1:0", upstream)
	conn := dial(t, relay.addr)
	direct := dial(t, upstream)
	for _, which := range []string{"over", "missing", "down"} {
		relayed, _ := placeOrderCase(conn, which)
		original, _ := placeOrderCase(direct, which)
		// Go encodes ErrorInfo.metadata in a random order, so two calls differ
		// in their bytes; they are compared as what they say.
		a, b := status.Convert(relayed), status.Convert(original)
		if a.Code() != b.Code() || a.Message() != b.Message() || len(a.Details()) != len(b.Details()) {
			t.Fatalf("%s: the relay changed the status:\n got %v\nwant %v", which, a.Proto(), b.Proto())
		}
		got, ok := shopv1.EntryOf(relayed)
		want, _ := shopv1.EntryOf(original)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: the relay changed the entry:\n got %+v\nwant %+v", which, got, want)
		}
	}
	plain, _ := placeOrderCase(conn, "plain")
	if !errmapv1.IsApiItemNotFound(plain) || strings.Contains(status.Convert(plain).Message(), "no such card") {
		t.Fatalf("plain: the layer did not rewrite it: %v", plain)
	}
	var lines []map[string]interface{}
	for _, line := range strings.Split(strings.TrimSpace(relay.stop(t)), "\n") {
		var read map[string]interface{}
		if err := json.Unmarshal([]byte(line), &read); err != nil {
			t.Fatalf("relay line %q: %v", line, err)
		}
		lines = append(lines, read)
	}
	want := []interface{}{"SHOP_ERROR_QUANTITY_OVER_LIMIT", "SHOP_ERROR_CART_NOT_FOUND", "SHOP_ERROR_PAYMENT_PROVIDER_DOWN", nil}
	if len(lines) != len(want) {
		t.Fatalf("relay read %d statuses, want %d: %v", len(lines), len(want), lines)
	}
	for i, reason := range want {
		if lines[i]["shop_reason"] != reason {
			t.Fatalf("relay line %d: %v, want reason %v", i, lines[i], reason)
		}
	}
	if lines[0]["details"] != "ok" || fmt.Sprint(lines[0]["metadata"]) != "map[code:6 limit:10 quantity:12]" {
		t.Fatalf("relay line 0: %v", lines[0])
	}
	if lines[2]["retry_ms"] != float64(10000) {
		t.Fatalf("relay line 2: %v", lines[2])
	}
}

// captureStdout returns what run prints to os.Stdout.
func captureStdout(t *testing.T, run func()) string {
	t.Helper()
	reader, writer, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = writer
	done := make(chan string)
	go func() {
		read, _ := io.ReadAll(reader)
		done <- string(read)
	}()
	run()
	os.Stdout = saved
	_ = writer.Close()
	return <-done
}
