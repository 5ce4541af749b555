// Waits until a Kafka broker really serves clients: it answers DescribeCluster
// with itself as a live broker, and every partition it hosts has a leader.
// An open port alone is not enough: after a restart the listener accepts
// connections before partition leadership is restored, and clients then see
// NOT_LEADER / LEADER_NOT_AVAILABLE.
//
// usage: ReadyCheck <bootstrap> <timeout-seconds> [<broker-pid>]
// exit:  0 ready, 1 timed out, 2 the broker process died while waiting
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public final class ReadyCheck {
    private ReadyCheck() {}

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 2) {
            System.err.println("usage: ReadyCheck <bootstrap> <timeout-seconds> [<broker-pid>]");
            System.exit(64);
        }
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        long pid = args.length > 2 ? Long.parseLong(args[2]) : 0L;

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "200");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "casetrail-ready-check");

        String lastProblem = "no answer yet";
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                if (pid > 0 && ProcessHandle.of(pid).map(p -> !p.isAlive()).orElse(true)) {
                    System.err.println("broker process " + pid + " exited while starting");
                    System.exit(2);
                }
                try {
                    String problem = check(admin);
                    if (problem == null) {
                        return;
                    }
                    lastProblem = problem;
                } catch (Exception e) {
                    Throwable cause = e.getCause() != null ? e.getCause() : e;
                    lastProblem = cause.getClass().getSimpleName() + ": " + cause.getMessage();
                }
                Thread.sleep(250);
            }
        }
        System.err.println("broker at " + bootstrap + " not ready: " + lastProblem);
        System.exit(1);
    }

    // Returns null when ready, otherwise what is still missing.
    private static String check(Admin admin) throws Exception {
        var nodes = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS);
        if (nodes.isEmpty()) {
            return "no live broker registered yet";
        }
        Set<String> topics = admin.listTopics(new ListTopicsOptions().listInternal(true))
                .names().get(5, TimeUnit.SECONDS);
        if (topics.isEmpty()) {
            return null;
        }
        Map<String, TopicDescription> described = admin.describeTopics(topics)
                .allTopicNames().get(5, TimeUnit.SECONDS);
        for (TopicDescription topic : described.values()) {
            for (TopicPartitionInfo partition : topic.partitions()) {
                Node leader = partition.leader();
                if (leader == null || leader.isEmpty()) {
                    return "no leader yet for " + topic.name() + "-" + partition.partition();
                }
            }
        }
        return null;
    }
}
