import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoff, ReconnectingSocket, SocketState } from '../src/socket';
import { FakeSocket, FakeTimers } from './fakes';

function setup() {
  const sockets: FakeSocket[] = [];
  const timers = new FakeTimers();
  const states: SocketState[] = [];
  const messages: string[] = [];
  let opens = 0;
  const rs = new ReconnectingSocket({
    open: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    onOpen: () => opens++,
    onMessage: m => messages.push(m),
    onStateChange: s => states.push(s),
    minDelay: 100,
    maxDelay: 1000,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout
  });
  return { rs, sockets, timers, states, messages, opens: () => opens };
}

test('backoff doubles up to the maximum', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(n => backoff(n, 100, 1000)), [100, 200, 400, 800, 1000, 1000]);
});

test('messages are delivered once open', () => {
  const t = setup();
  t.rs.start();
  assert.equal(t.rs.state, 'connecting');
  t.sockets[0].open();
  assert.equal(t.rs.state, 'open');
  assert.equal(t.opens(), 1);
  t.sockets[0].receive('{"type":"x"}');
  assert.deepEqual(t.messages, ['{"type":"x"}']);
  assert.equal(t.rs.send('hi'), true);
  assert.deepEqual(t.sockets[0].sent, ['hi']);
});

test('a dropped connection is reopened with growing delays, reset after success', () => {
  const t = setup();
  t.rs.start();
  t.sockets[0].open();
  t.sockets[0].drop();
  assert.equal(t.rs.state, 'closed');
  assert.deepEqual(t.timers.pending, [100]);
  t.timers.advance(100);
  assert.equal(t.sockets.length, 2);
  t.sockets[1].drop(); // the server is still down
  assert.deepEqual(t.timers.pending, [200]);
  t.timers.advance(200);
  t.sockets[2].drop();
  assert.deepEqual(t.timers.pending, [400]);
  t.timers.advance(400);
  t.sockets[3].open();
  assert.equal(t.rs.state, 'open');
  assert.equal(t.rs.failures, 0);
  assert.equal(t.opens(), 2, 'onOpen runs on every (re)connection, so the list is fetched again');
  t.sockets[3].drop();
  assert.deepEqual(t.timers.pending, [100]);
});

test('send fails while not connected', () => {
  const t = setup();
  t.rs.start();
  assert.equal(t.rs.send('x'), false);
});

test('stop closes and never reconnects', () => {
  const t = setup();
  t.rs.start();
  t.sockets[0].open();
  t.rs.stop();
  assert.equal(t.sockets[0].closed, true);
  assert.equal(t.rs.state, 'stopped');
  t.sockets[0].drop();
  t.timers.advance(100000);
  assert.equal(t.sockets.length, 1);
});

test('reconnectNow skips the wait', () => {
  const t = setup();
  t.rs.start();
  t.sockets[0].drop();
  t.rs.reconnectNow();
  assert.equal(t.sockets.length, 2);
  assert.deepEqual(t.timers.pending, [], 'the pending retry was cancelled');
});

test('a late close of a replaced socket is ignored', () => {
  const t = setup();
  t.rs.start();
  t.sockets[0].drop();
  t.rs.reconnectNow();
  t.sockets[1].open();
  t.sockets[0].onclose?.({ code: 1006 });
  assert.equal(t.rs.state, 'open');
});

test('a socket that cannot even be created is retried', () => {
  let calls = 0;
  const timers = new FakeTimers();
  const rs = new ReconnectingSocket({
    open: () => {
      calls++;
      throw new Error('bad url');
    },
    minDelay: 10,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout
  });
  rs.start();
  timers.advance(10);
  assert.equal(calls, 2);
  rs.stop();
});
