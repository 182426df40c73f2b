// A room server's Kafka client that publishes in transactions (the Java client, as a JVM room server would):
// reads lines from stdin, "key<TAB>value" to send, "commit" or "abort" to end the transaction in progress.
// Usage: java -cp 'KAFKA/libs/*' TransactionalRoomServer.java BOOTSTRAP TOPIC < lines
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

public class TransactionalRoomServer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("transactional.id", "room-server-" + UUID.randomUUID());
        props.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        props.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        props.put("compression.type", "lz4");
        int sent = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();
            boolean open = false;
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                if (line.equals("commit") || line.equals("abort")) {
                    if (open) {
                        if (line.equals("commit")) {
                            producer.commitTransaction();
                        } else {
                            producer.flush();
                            producer.abortTransaction();
                        }
                    }
                    open = false;
                    continue;
                }
                if (!open) {
                    producer.beginTransaction();
                    open = true;
                }
                int tab = line.indexOf('\t');
                producer.send(new ProducerRecord<>(args[1], line.substring(0, tab), line.substring(tab + 1)));
                sent++;
            }
            if (open) {
                producer.commitTransaction();
            }
        }
        System.out.println("sent " + sent);
    }
}
