// A small TCP proxy for the reconnect test: forwards 127.0.0.1:<port> to the
// server, and can cut every connection and refuse new ones for a while, like a
// network outage between the browsers and the signaling server.

import net from 'node:net';

/** Starts a proxy to `target` ({host, port}); resolves to {port, cut(ms), close(), cuts}. */
export async function startProxy(target) {
  const sockets = new Set();
  let server = null;
  let port = 0;
  let accepted = 0;

  const onConnection = (client) => {
    accepted++;
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const kill = () => {
      for (const s of [client, upstream]) {
        sockets.delete(s);
        s.destroy();
      }
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', kill);
    upstream.on('close', kill);
    client.pipe(upstream);
    upstream.pipe(client);
  };

  const listen = () => new Promise((resolve, reject) => {
    server = net.createServer(onConnection);
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      port = server.address().port;
      server.off('error', reject);
      resolve();
    });
  });

  const stopListening = () => new Promise((resolve) => {
    if (!server) return resolve();
    const s = server;
    server = null;
    s.close(() => resolve());
  });

  const dropAll = () => {
    for (const s of [...sockets]) {
      sockets.delete(s);
      // An RST, like a network path that died, rather than a polite FIN.
      if (typeof s.resetAndDestroy === 'function') s.resetAndDestroy(); else s.destroy();
    }
  };

  await listen();

  return {
    get port() { return port; },
    get url() { return `http://127.0.0.1:${port}`; },
    get accepted() { return accepted; },
    get open() { return sockets.size; },
    /** Drops every proxied connection and refuses new ones for `ms`, then accepts again. */
    async cut(ms) {
      const closed = stopListening();
      dropAll();
      await closed;
      await new Promise((r) => setTimeout(r, ms));
      await listen();
    },
    async close() {
      const closed = stopListening();
      dropAll();
      await closed;
    },
  };
}
