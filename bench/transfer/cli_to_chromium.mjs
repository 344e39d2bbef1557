// CLI -> Chromium: `switchboard send FILE` to a headless Chromium page at /recv/CODE?yes=1, which
// writes to the origin-private file system and hashes as it goes. The clock runs from the first
// byte the page reports to the page reaching `done` (all files verified), polled every 50 ms.
// Env: FILE, CODE, SWITCHBOARD_SERVER (the running server), SWITCHBOARD_BIN. Prints
// `cli->chromium MB/s: X`.
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { launchBrowser } from '../../tests/e2e/lib/harness.mjs';

const { FILE, CODE, SWITCHBOARD_SERVER: server, SWITCHBOARD_BIN: bin } = process.env;
const size = statSync(FILE).size;
const sender = spawn(bin, ['send', '--code', CODE, '--server', server, FILE], { stdio: 'ignore' });
const browser = await launchBrowser({ fakeUi: false });
try {
  const page = await browser.newPage();
  await page.goto(`${server}/recv/${CODE}?yes=1`);
  let first = 0;
  for (;;) {
    const { state, bytes } = await page.evaluate(() => ({
      state: window.switchboardShare?.state,
      bytes: window.switchboardShare?.bytes ?? 0,
    }));
    if (!first && bytes > 0) first = performance.now();
    if (state === 'done') break;
    if (['cancelled', 'wrong_code', 'error', 'interrupted'].includes(state)) throw new Error(`page ended in ${state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log(`cli->chromium MB/s: ${(size / ((performance.now() - first) / 1000) / 1e6).toFixed(1)}`);
} finally {
  await browser.close();
  sender.kill();
}
