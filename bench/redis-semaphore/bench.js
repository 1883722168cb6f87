// The polling Redis semaphore that limitd is compared with: npm
// redis-semaphore (a sorted set, acquired by a Lua script, retried every
// retryInterval ms), driven like limitd-bench's handoff and throughput
// scenarios, against a redis-server without persistence on this machine.
//
//   redis-server --port 6390 --save '' --appendonly no &
//   npm ci && node bench.js [--port 6390] [--runs 3]
//
// One JSON line per scenario and retry interval, with the medians of the
// runs. The throughput workers share one Node.js process (as limitd-bench's
// share one Go process), each with a connection of its own; the hand-off's
// two workers are processes of their own (see handoff).
'use strict'
const { Semaphore } = require('redis-semaphore')
const Redis = require('ioredis')

const arg = (name, def) => {
  const i = process.argv.indexOf('--' + name)
  return i > 0 ? Number(process.argv[i + 1]) : def
}
const port = arg('port', 6390)
const runs = arg('runs', 3)
const now = () => Number(process.hrtime.bigint()) / 1e3 // µs
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.round((p / 100) * (s.length - 1))]
}

function semaphore(client, key, capacity, retryInterval) {
  // lockTimeout and refresh as a long-running job would set them; the
  // acquire never gives up within a run.
  return new Semaphore(client, key, capacity, {
    lockTimeout: 60000, acquireTimeout: 600000, retryInterval, refreshInterval: 0,
  })
}

// handoff: limit 1, two workers taking turns, each in a process of its own
// (as limitd-bench's holder and waiter are two connections to a server
// process, and so that one event loop cannot fire the holder's release and
// the waiter's retry in the same tick). Each holds 1 ms plus a random part
// of the retry interval — with a fixed hold the release would land at the
// same point of the waiter's polling cycle every time, and the figure would
// be that phase — releases, and asks again once the other has the slot (a
// polling semaphore has no queue: asking again at once, the releaser's own
// first attempt would win the slot before the waiter's next poll). A sample
// is the time from a release being sent to the other's acquire resolving,
// both read from the system's monotonic clock.
async function handoff(retryInterval, samples) {
  const { fork } = require('child_process')
  const key = `handoff-${retryInterval}-${Date.now()}`
  const kids = [0, 1].map(() => fork(__filename, ['--handoff-worker', '--port', String(port)]))
  const grants = []
  const releases = []
  await new Promise((resolve) => {
    kids.forEach((kid, i) => {
      kid.on('message', (m) => {
        if (m.released !== undefined) {
          releases.push(m.released)
          return
        }
        grants.push(m.got)
        if (grants.length === 1) {
          // The second worker starts once the first holds the slot, so it
          // is polling when the first release is sent.
          kids[1].send({ key, retryInterval })
        } else {
          kids[1 - i].send({ otherGot: true })
        }
        if (grants.length > samples) resolve()
      })
    })
    kids[0].send({ key, retryInterval })
  })
  kids.forEach((kid) => kid.kill())
  // Grants and releases alternate in time: grant i+1 follows release i.
  grants.sort((a, b) => a - b)
  releases.sort((a, b) => a - b)
  const out = []
  for (let i = 0; i + 1 < grants.length && i < releases.length; i++) out.push(grants[i + 1] - releases[i])
  return { p50_us: pct(out, 50), p90_us: pct(out, 90), p99_us: pct(out, 99), samples: out.length }
}

// handoffWorker is one side of handoff, in a child process: acquire, hold,
// release, wait until the other has the slot, and again.
function handoffWorker() {
  const client = new Redis({ port })
  let otherGot = null
  process.on('message', async (m) => {
    if (m.otherGot) {
      if (otherGot) otherGot()
      return
    }
    for (;;) {
      const sem = semaphore(client, m.key, 1, m.retryInterval)
      await sem.acquire()
      process.send({ got: now() })
      await sleep(1 + Math.random() * m.retryInterval)
      const next = new Promise((r) => { otherGot = r })
      process.send({ released: now() })
      await sem.release()
      await next
    }
  })
}

// throughput: 64 workers loop acquire -> release on one limit of 16 (or
// spread over 1,000 limits of 16) for 10 s.
async function throughput(retryInterval, limits, seconds) {
  const stamp = Date.now()
  let cycles = 0
  const lat = []
  const end = now() + seconds * 1e6
  const worker = async (i) => {
    const client = new Redis({ port })
    let n = i
    while (now() < end) {
      n = (n * 1103515245 + 12345) % 2147483648
      const sem = semaphore(client, `tp-${retryInterval}-${stamp}-${n % limits}`, 16, retryInterval)
      const t0 = now()
      await sem.acquire()
      lat.push(now() - t0)
      await sem.release()
      cycles++
    }
    client.disconnect()
  }
  const t0 = now()
  await Promise.all(Array.from({ length: 64 }, (_, i) => worker(i)))
  const elapsed = (now() - t0) / 1e6
  return { cycles_per_s: cycles / elapsed, acquire_p50_us: pct(lat, 50), acquire_p99_us: pct(lat, 99) }
}

async function repeat(name, f) {
  const results = []
  for (let i = 0; i < runs; i++) {
    const r = await f()
    results.push(r)
    console.error(name, `run ${i + 1}:`, JSON.stringify(r))
  }
  const med = {}
  for (const k of Object.keys(results[0])) med[k] = median(results.map((r) => r[k]))
  console.log(JSON.stringify({ scenario: name, runs, ...med }))
}

;(async () => {
  if (process.argv.includes('--handoff-worker')) {
    handoffWorker()
    return
  }
  for (const retry of [10, 1]) {
    await repeat(`handoff retry=${retry}ms hold=1ms`, () => handoff(retry, 600))
  }
  for (const retry of [10, 1]) {
    for (const limits of [1, 1000]) {
      await repeat(`throughput retry=${retry}ms limits=${limits}`, () => throughput(retry, limits, 10))
    }
  }
})().catch((e) => { console.error(e); process.exit(1) })
