// The "small script" peer of benches/cloud.sh: deletes the keys listed in a
// file one request at a time, waiting for each answer (what a hand-written
// cleanup job does). Usage: node oneby.js s3|az PREFIX KEYS_FILE
const fs = require("fs");
const [kind, prefix, file] = process.argv.slice(2);
const keys = fs.readFileSync(file, "utf8").split("\n").filter(Boolean);

async function main() {
  const started = process.hrtime.bigint();
  if (kind === "s3") {
    const { S3Client, DeleteObjectCommand } = require("@aws-sdk/client-s3");
    const s3 = new S3Client({
      endpoint: process.env.BENCH_S3_ENDPOINT, region: "us-east-1", forcePathStyle: true,
      credentials: { accessKeyId: process.env.BENCH_S3_KEY, secretAccessKey: process.env.BENCH_S3_SECRET },
    });
    for (const k of keys) {
      await s3.send(new DeleteObjectCommand({ Bucket: "bench", Key: `${prefix}/${k}` }));
    }
  } else {
    const { BlobServiceClient } = require("@azure/storage-blob");
    const container = BlobServiceClient.fromConnectionString(process.env.BENCH_AZ_CONNECTION)
      .getContainerClient("bench");
    for (const k of keys) {
      // With its snapshots, as lethe deletes it (a plain delete of a blob
      // that has snapshots is refused, leaving the data behind).
      await container.getBlobClient(`${prefix}/${k}`).deleteIfExists({ deleteSnapshots: "include" });
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(seconds.toFixed(3));
}
main().catch((e) => { console.error(e.message); process.exit(1); });
