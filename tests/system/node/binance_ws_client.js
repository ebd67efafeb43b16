// The npm `binance` package's WebsocketClient against the local WebSocket, with only its wsUrl changed.
// Usage: node binance_ws_client.js ws://127.0.0.1:PORT
// Prints one JSON line: what arrived on <symbol>@markPrice@1s and !markPrice@arr@1s, then exits 0; 1 on timeout.
const { WebsocketClient } = require('binance');

const quiet = { trace: () => {}, info: () => {}, error: (...args) => console.error(...args) };
const client = new WebsocketClient({ wsUrl: process.argv[2] }, quiet);
const seen = { replies: [], symbol: null, allMarket: null };

client.on('response', (reply) => seen.replies.push({ result: reply.result, id: reply.id }));
client.on('message', (data) => {
  if (Array.isArray(data)) {
    seen.allMarket = seen.allMarket || { rows: data.length, first: data[0] };
  } else if (data && data.e === 'markPriceUpdate') {
    seen.symbol = seen.symbol || data;
  }
  if (seen.symbol && seen.allMarket) {
    console.log(JSON.stringify(seen));
    process.exit(0);
  }
});
client.subscribeMarkPrice('BTCUSDT', 'usdm', 1000);
client.subscribeAllMarketMarkPrice('usdm', 1000);
setTimeout(() => { console.error('timeout: ' + JSON.stringify(seen)); process.exit(1); }, 20000);
