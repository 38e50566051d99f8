import { createInterface } from 'node:readline/promises';

/** Asks on the terminal for `expected` to be typed; false without a terminal. */
export async function confirmOnTerminal(question: string, expected: string): Promise<boolean> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} `);
    return answer.trim() === expected;
  } finally {
    rl.close();
  }
}
