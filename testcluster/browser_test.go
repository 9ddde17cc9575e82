package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/e2e"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// startBrowser starts Debian's headless Chromium for a test, saving
// downloads in dir. Without Chromium the test is skipped, unless
// ATOLL_REQUIRE_BROWSER=1 (CI installs it) makes that a failure.
func startBrowser(t *testing.T, dir string) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("ATOLL_REQUIRE_BROWSER") == "1" {
			t.Fatal("chromium not found (apt-get install chromium)")
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,                               // NB: CI runs as root
		chromedp.Flag("ignore-certificate-errors", true), // nodes present the test cluster's own CA
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	err = chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir,
		})
		return err
	}))
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// TestWebPageInABrowser drives the page every node serves in a real
// browser: encrypt and upload a file, open its link, download, decrypt,
// verify and compare the saved bytes; links made by the Go client open in
// the page and the page's in the Go client (one format, two
// implementations); a damaged key is refused; the cluster page shows a
// killed region as down. ATOLL_BROWSER_MIB sets the file size (default 3;
// BENCHMARKS.md uses 100).
func TestWebPageInABrowser(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1, ChunkSize: 4 << 20}) // NB: real chunks, for the throughput figures
	dir := t.TempDir()
	bctx := startBrowser(t, dir)
	ctx := context.Background()
	key, err := c.CreateAccessKey(ctx, api.KeyRequest{Scopes: []string{api.ScopeRead, api.ScopeWrite}})
	if err != nil {
		t.Fatal(err)
	}
	mib := 3
	if v, err := strconv.Atoi(os.Getenv("ATOLL_BROWSER_MIB")); err == nil && v > 0 {
		mib = v
	}
	data := make([]byte, mib<<20+12345)
	rand.NewChaCha8([32]byte{7}).Read(data)
	const name = "field notes 2026.bin"
	src := filepath.Join(t.TempDir(), name)
	os.WriteFile(src, data, 0o644)
	base := c.Members()[0].Node.URL()
	run := func(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if err := chromedp.Do(tctx, steps...); err != nil {
			status, _ := chromedp.Run(bctx, chromedp.TextContent(chromedp.CSS("#status")))
			t.Fatalf("%s: %v (page status %q)", what, err, status)
		}
	}
	get := func(a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(bctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		if err != nil {
			t.Fatal(err)
		}
		return v.Value
	}

	// Share: the key form, then a file.
	run("uploading", time.Minute,
		chromedp.Navigate(base+"/"),
		chromedp.SetValue(chromedp.CSS("#accesskey"), key.AccessKey),
		chromedp.SetValue(chromedp.CSS("#secretkey"), key.SecretKey),
		chromedp.Click(chromedp.CSS("#keyform button")),
		chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{src}),
		chromedp.WaitVisible(chromedp.CSS("#result")),
	)
	linkText, uploadSecs, encryptSecs := get(chromedp.Value(chromedp.CSS("#link"))), attr("body", "data-upload-seconds"), attr("body", "data-encrypt-seconds")
	link, err := e2e.ParseLink(linkText)
	if err != nil {
		t.Fatalf("the page showed %q: %v", linkText, err)
	}
	// The page's link opens in the Go client.
	env, rc, err := c.Client().OpenLink(ctx, link)
	if err != nil {
		t.Fatalf("the Go client opening the page's link: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) || env.Name != name {
		t.Fatalf("the Go client read the page's upload: %v, name %q, equal %v", err, env.Name, bytes.Equal(got, data))
	}

	// Open the link: download, decrypt, verify, save.
	saved := filepath.Join(dir, name)
	run("opening the link", time.Minute,
		chromedp.Navigate(link.String()),
		chromedp.WaitEnabled(chromedp.CSS("#save")),
	)
	shown := get(chromedp.TextContent(chromedp.CSS("#filename")))
	run("downloading", time.Minute,
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitReady(chromedp.CSS(`body[data-verified="true"]`)),
	)
	downloadSecs := attr("body", "data-download-seconds")
	if shown != name {
		t.Fatalf("the page shows the name %q", shown)
	}
	waitFile(t, saved, int64(len(data)))
	if b, _ := os.ReadFile(saved); !bytes.Equal(b, data) {
		t.Fatalf("the browser saved %d bytes, not the %d uploaded", len(b), len(data))
	}
	up, _ := strconv.ParseFloat(uploadSecs, 64)
	down, _ := strconv.ParseFloat(downloadSecs, 64)
	enc, _ := strconv.ParseFloat(encryptSecs, 64)
	t.Logf("browser, %d MiB: encrypt+upload+link %.2f s (%.1f MB/s; encrypting %.2f s), download+decrypt %.2f s (%.1f MB/s)",
		mib, up, float64(len(data))/1e6/up, enc, down, float64(len(data))/1e6/down)

	// A link the Go client made opens in the page.
	small := []byte("made by the Go client, opened by the browser")
	goLink, err := c.Client().Share(ctx, bytes.NewReader(small), int64(len(small)), client.ShareOptions{Name: "from-go.txt"})
	if err != nil {
		t.Fatal(err)
	}
	run("opening the Go client's link", 30*time.Second,
		chromedp.Navigate(goLink.String()),
		chromedp.WaitEnabled(chromedp.CSS("#save")),
		chromedp.Click(chromedp.CSS("#save")),
		chromedp.WaitReady(chromedp.CSS(`body[data-verified="true"]`)),
	)
	waitFile(t, filepath.Join(dir, "from-go.txt"), int64(len(small)))
	if b, _ := os.ReadFile(filepath.Join(dir, "from-go.txt")); !bytes.Equal(b, small) {
		t.Fatalf("the browser saved %q", b)
	}

	// A damaged key is refused.
	bad := link
	bad.Key[3] ^= 1
	run("a damaged key", 30*time.Second,
		chromedp.Navigate(bad.String()),
		chromedp.WaitVisible(chromedp.CSS("#status.error")),
	)
	if status := get(chromedp.TextContent(chromedp.CSS("#status"))); !strings.Contains(status, "Refused") {
		t.Fatalf("a damaged key: the page says %q", status)
	}

	// The cluster page shows every region, then one as down.
	lost := c.Regions()[2]
	sel := func(r string) string { return fmt.Sprintf("#region-%s", r) }
	actions := []chromedp.Action[chromedp.Void]{chromedp.Navigate(base + "/cluster"), chromedp.WaitVisible(chromedp.CSS("#guarantee.yes"))}
	for _, r := range c.Regions() {
		actions = append(actions, chromedp.WaitVisible(chromedp.CSS(sel(string(r)))))
	}
	run("the cluster page", 30*time.Second, actions...)
	if err := c.KillRegion(lost); err != nil {
		t.Fatal(err)
	}
	run("the cluster page after a region loss", 30*time.Second,
		chromedp.WaitVisible(chromedp.CSS(sel(string(lost))+".down")),
	)
}

// waitFile waits until the browser has saved path with size bytes.
func waitFile(t *testing.T, path string, size int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() == size {
			return
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(filepath.Dir(path))
			t.Fatalf("%s not saved with %d bytes; the directory holds %v", path, size, entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
